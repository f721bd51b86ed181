//! What a notification asks of the database: dirty spans, connection changes, pushed values.

use chrono::{DateTime, NaiveDate, Utc};

use super::{DaySpan, Event, InstantSpan, Notification};

/// A span of data that changed and must be re-fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    Epoch(InstantSpan),
    Daily(DaySpan),
}

/// A data source connected or disconnected at `at` (the event's own time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionChange {
    pub data_source_id: i32,
    pub connected: bool,
    pub at: DateTime<Utc>,
}

/// One epoch value carried by a data-push webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochValue {
    pub data_source_id: i32,
    pub data_type_id: i32,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub timezone_offset: Option<i32>,
    pub value: String,
}

/// One daily value carried by a data-push webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyValue {
    pub data_source_id: i32,
    pub data_type_id: i32,
    pub day: NaiveDate,
    pub timezone_offset: Option<i32>,
    pub value: String,
}

/// Everything one notification changes, for one end user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub spans: Vec<Span>,
    pub connections: Vec<ConnectionChange>,
    pub epoch_values: Vec<EpochValue>,
    pub daily_values: Vec<DailyValue>,
}

impl Notification {
    /// The changes this notification asks for.
    ///
    /// ```
    /// use thryve_bridge::thryve::{parse, Parsed};
    /// let body = serde_json::json!({"endUserId": "u", "timestampType": "iso",
    ///     "type": "notification.data.daily.createupdate",
    ///     "data": {"startDay": "2024-01-01", "endDay": "2024-01-03", "dataSourceId": 1, "dataTypeIds": [2000]}});
    /// let Parsed::Valid(n) = parse(body.as_object().unwrap()) else { panic!() };
    /// assert_eq!(n.effects().spans.len(), 1);
    /// ```
    pub fn effects(&self) -> Effects {
        self.event.effects()
    }
}

impl Event {
    pub fn effects(&self) -> Effects {
        match self {
            Event::SourceConnection {
                data_source_id,
                connected,
                at,
            } => Effects {
                connections: vec![ConnectionChange {
                    data_source_id: *data_source_id,
                    connected: *connected,
                    at: *at,
                }],
                ..Effects::default()
            },
            Event::EpochData(span) => Effects {
                spans: vec![Span::Epoch(span.clone())],
                ..Effects::default()
            },
            Event::DailyData(span) => Effects {
                spans: vec![Span::Daily(span.clone())],
                ..Effects::default()
            },
        }
    }
}
