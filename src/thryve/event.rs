//! What a parse gives: the envelope, a valid notification's typed event (spans, pushed values,
//! connection changes) or the field that was wrong. Types only; the parsing is in `dispatch`
//! and the readers it calls.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};

/// Who a delivery is about and what kind it is; present, as far as it can be read, for every
/// JSON object, valid or not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub event_type: Option<String>,
    pub end_user_id: Option<String>,
    pub end_user_alias: Option<String>,
}

/// The outcome of reading a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A known type whose fields all make sense.
    Valid(Notification),
    /// A known type with a missing or malformed field: kept as `quarantined`.
    Invalid {
        envelope: Envelope,
        error: ParseError,
    },
    /// A type the bridge does not handle: kept as `ignored`.
    Unknown { envelope: Envelope },
}

/// A field that is missing or wrong, named by its JSON path (`data.startTimestamp`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ParseError {
    pub field: String,
    pub problem: String,
}

impl ParseError {
    pub(super) fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same error with its field placed under `parent`, so inner readers need not know
    /// where they sit and the happy path builds no path strings.
    pub(super) fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

/// A valid notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub event_type: String,
    pub end_user_id: String,
    pub end_user_alias: Option<String>,
    pub event: Event,
}

/// What happened, in typed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `notification.source.connect` / `.disconnect` (or the `webhook.source.*` spelling).
    SourceConnection {
        data_source_id: i32,
        connected: bool,
        at: DateTime<Utc>,
    },
    /// `notification.data.epoch.createupdate`.
    EpochData(InstantSpan),
    /// `notification.data.daily.createupdate`.
    DailyData(DaySpan),
    /// `event.data.epoch.create` / `.update`: the values themselves, per data source.
    EpochPush(Vec<SourceEpochValues>),
    /// `event.data.daily.create` / `.update`: the values themselves, per data source.
    DailyPush(Vec<SourceDailyValues>),
    /// The legacy `{"sourceUpdate": {...}}` body (event type `sourceUpdate`): one data source,
    /// and at least one of a daily span, an epoch span and a connection change.
    Legacy {
        daily: Option<DaySpan>,
        epoch: Option<InstantSpan>,
        connection: Option<ConnectionChange>,
    },
}

impl Event {
    /// How many values the event carries: a data push's, 0 for a notification.
    pub fn value_count(&self) -> usize {
        match self {
            Event::EpochPush(sources) => sources.iter().map(|s| s.values.len()).sum(),
            Event::DailyPush(sources) => sources.iter().map(|s| s.values.len()).sum(),
            _ => 0,
        }
    }
}

/// Epoch data of some types changed between two instants (both inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstantSpan {
    pub data_source_id: i32,
    /// Sorted and distinct.
    pub data_type_ids: Vec<i32>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Daily data of some types changed between two days (both inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaySpan {
    pub data_source_id: i32,
    /// Sorted and distinct.
    pub data_type_ids: Vec<i32>,
    pub start: NaiveDate,
    pub end: NaiveDate,
}

/// A data source connected or disconnected at `at`: the event's own time, or `None` for a
/// legacy body that does not say (the change then counts from when the bridge received it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionChange {
    pub data_source_id: i32,
    pub connected: bool,
    pub at: Option<DateTime<Utc>>,
}

/// One epoch value carried by a data-push webhook (or a data-API answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochValue {
    pub data_source_id: i32,
    pub data_type_id: i32,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub timezone_offset: Option<i32>,
    pub value: String,
    pub details: Details,
}

/// One daily value carried by a data-push webhook (or a data-API answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyValue {
    pub data_source_id: i32,
    pub data_type_id: i32,
    pub day: NaiveDate,
    pub timezone_offset: Option<i32>,
    pub value: String,
    pub details: Details,
}

/// What Thryve says about a value besides the value ("data annotations"): a push's
/// `additionalDetails`, the data API's `details`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    /// The annotations object without `timezoneOffset` (the value's own field holds that, read
    /// from beside the object or inside it), so a pushed and a fetched copy of one value
    /// compare equal; `None` when absent or nothing else is in it.
    pub annotations: Option<Map<String, Value>>,
    /// `generation` of the annotations (`manual_entry`, `tracker`, ...): part of an epoch
    /// value's identity at Thryve.
    pub generation: Option<String>,
    /// `thirdPartyDataSourceId`, beside the value or in its annotations: part of an epoch
    /// value's identity at Thryve.
    pub third_party_data_source_id: Option<String>,
}

/// One data source's epoch values from an `event.data.epoch.*` push, in payload order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEpochValues {
    pub data_source_id: i32,
    /// `dataSourceName`, when the element gives one as a string.
    pub data_source_name: Option<String>,
    /// Every value carries `data_source_id` too, so each can be stored on its own.
    pub values: Vec<EpochValue>,
}

/// One data source's daily values from an `event.data.daily.*` push, in payload order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDailyValues {
    pub data_source_id: i32,
    /// `dataSourceName`, when the element gives one as a string.
    pub data_source_name: Option<String>,
    /// Every value carries `data_source_id` too, so each can be stored on its own.
    pub values: Vec<DailyValue>,
}
