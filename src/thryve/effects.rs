//! What a notification asks of the database: dirty spans, connection changes, pushed values.

use chrono::{DateTime, NaiveDate, Utc};

use super::{DaySpan, Event, InstantSpan, Notification, SourceDailyValues, SourceEpochValues};

/// A span of data that changed and must be re-fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    Epoch(InstantSpan),
    Daily(DaySpan),
}

/// A data source connected or disconnected at `at`: the event's own time, or `None` for a
/// legacy body that does not say (the change then counts from when the bridge received it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionChange {
    pub data_source_id: i32,
    pub connected: bool,
    pub at: Option<DateTime<Utc>>,
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
    /// The changes this event asks for.
    ///
    /// A data push gives one span per data-source element that has values (epoch: earliest
    /// start to latest end, a value without an end counting as its start; daily: earliest to
    /// latest day; types sorted and distinct), and every value. A legacy body gives its daily
    /// span, its epoch span and its connection change, whichever it has.
    ///
    /// ```
    /// use thryve_bridge::thryve::{parse, Parsed, Span};
    /// let body = serde_json::json!({"endUserId": "u", "timestampType": "unix",
    ///     "type": "event.data.daily.update", "data": [{"dataSourceId": 8, "dailyData": [
    ///         {"day": 1765584000000_i64, "dataTypeId": 3001, "value": "59"},
    ///         {"day": 1765670400000_i64, "dataTypeId": 1000, "value": "4200"}]}]});
    /// let Parsed::Valid(n) = parse(body.as_object().unwrap()) else { panic!() };
    /// let effects = n.event.effects();
    /// let [Span::Daily(span)] = &effects.spans[..] else { panic!() };
    /// assert_eq!(span.data_type_ids, vec![1000, 3001]);
    /// assert_eq!(effects.daily_values.len(), 2);
    /// ```
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
                    at: Some(*at),
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
            Event::EpochPush(sources) => Effects {
                spans: sources
                    .iter()
                    .filter_map(epoch_span)
                    .map(Span::Epoch)
                    .collect(),
                epoch_values: sources.iter().flat_map(|s| s.values.clone()).collect(),
                ..Effects::default()
            },
            Event::DailyPush(sources) => Effects {
                spans: sources
                    .iter()
                    .filter_map(day_span)
                    .map(Span::Daily)
                    .collect(),
                daily_values: sources.iter().flat_map(|s| s.values.clone()).collect(),
                ..Effects::default()
            },
            Event::Legacy {
                daily,
                epoch,
                connection,
            } => Effects {
                spans: daily
                    .iter()
                    .cloned()
                    .map(Span::Daily)
                    .chain(epoch.iter().cloned().map(Span::Epoch))
                    .collect(),
                connections: connection.iter().copied().collect(),
                ..Effects::default()
            },
        }
    }
}

/// The span covering one data source's pushed epoch values; `None` when it has none.
fn epoch_span(source: &SourceEpochValues) -> Option<InstantSpan> {
    let values = &source.values;
    Some(InstantSpan {
        data_source_id: source.data_source_id,
        data_type_ids: distinct(values.iter().map(|v| v.data_type_id)),
        start: values.iter().map(|v| v.start).min()?,
        end: values.iter().map(|v| v.end.unwrap_or(v.start)).max()?,
    })
}

/// The span covering one data source's pushed daily values; `None` when it has none.
fn day_span(source: &SourceDailyValues) -> Option<DaySpan> {
    let values = &source.values;
    Some(DaySpan {
        data_source_id: source.data_source_id,
        data_type_ids: distinct(values.iter().map(|v| v.data_type_id)),
        start: values.iter().map(|v| v.day).min()?,
        end: values.iter().map(|v| v.day).max()?,
    })
}

fn distinct(ids: impl Iterator<Item = i32>) -> Vec<i32> {
    let mut ids: Vec<i32> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::{json, Value};

    use super::*;
    use crate::thryve::{parse, Parsed};

    fn effects(body: Value) -> Effects {
        match parse(body.as_object().unwrap()) {
            Parsed::Valid(n) => n.effects(),
            other => panic!("{other:?}"),
        }
    }

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    #[test]
    fn an_epoch_push_gives_one_span_per_source_with_values_and_every_value() {
        let e = effects(
            json!({"endUserId": "u", "timestampType": "unix", "type": "event.data.epoch.update",
            "data": [
                {"dataSourceId": 8, "epochData": [
                    {"startTimestamp": 2000, "endTimestamp": 3000, "dataTypeId": 3000, "value": "60"},
                    // No end: the value is an instant, and here the latest one.
                    {"startTimestamp": 5000, "dataTypeId": 1000, "value": "10"},
                    {"startTimestamp": 1000, "endTimestamp": 1500, "dataTypeId": 3000, "value": "61"}]},
                {"dataSourceId": 2, "epochData": []},
                {"dataSourceId": 1, "epochData": [
                    {"startTimestamp": 7000, "endTimestamp": 9000, "dataTypeId": 1200, "value": "run"}]}]}),
        );
        assert_eq!(
            e.spans,
            vec![
                Span::Epoch(InstantSpan {
                    data_source_id: 8,
                    data_type_ids: vec![1000, 3000],
                    start: at(1000),
                    end: at(5000),
                }),
                Span::Epoch(InstantSpan {
                    data_source_id: 1,
                    data_type_ids: vec![1200],
                    start: at(7000),
                    end: at(9000),
                }),
            ]
        );
        let values: Vec<(i32, i32, &str)> = e
            .epoch_values
            .iter()
            .map(|v| (v.data_source_id, v.data_type_id, v.value.as_str()))
            .collect();
        assert_eq!(
            values,
            vec![
                (8, 3000, "60"),
                (8, 1000, "10"),
                (8, 3000, "61"),
                (1, 1200, "run")
            ]
        );
        assert!(e.connections.is_empty() && e.daily_values.is_empty());
    }

    #[test]
    fn a_daily_push_spans_its_earliest_to_latest_day() {
        let e = effects(
            json!({"endUserId": "u", "timestampType": "iso", "type": "event.data.daily.create",
            "data": [{"dataSourceId": 8, "dailyData": [
                {"day": "2025-12-14", "dataTypeId": 3001, "value": "59"},
                {"day": "2025-12-10", "dataTypeId": 1000, "value": "4200"},
                {"day": "2025-12-12", "dataTypeId": 3001, "value": "58"}]}]}),
        );
        assert_eq!(
            e.spans,
            vec![Span::Daily(DaySpan {
                data_source_id: 8,
                data_type_ids: vec![1000, 3001],
                start: NaiveDate::from_ymd_opt(2025, 12, 10).unwrap(),
                end: NaiveDate::from_ymd_opt(2025, 12, 14).unwrap(),
            })]
        );
        assert_eq!(e.daily_values.len(), 3);
        assert!(e.epoch_values.is_empty());
    }

    #[test]
    fn a_legacy_update_gives_whichever_parts_it_has() {
        let e = effects(
            json!({"sourceUpdate": {"authenticationToken": "u", "dataSource": 1,
            "createdAt": "2020-02-26T16:54:30Z", "connectionStatus": "NEW",
            "/v5/dailyDynamicValues": {"startDay": "2020-02-26", "endDay": "2020-02-27", "dailyDynamicValueTypes": [2000]},
            "/v5/dynamicEpochValues": {"startTimestampUnix": 1000, "endTimestampUnix": 2000, "dynamicValueTypes": [3000]}}}),
        );
        assert!(matches!(&e.spans[..], [Span::Daily(d), Span::Epoch(p)]
            if d.data_type_ids == [2000] && p.data_type_ids == [3000] && p.end == at(2000)));
        assert_eq!(
            e.connections,
            vec![ConnectionChange {
                data_source_id: 1,
                connected: true,
                at: Some(at(1582736070000)),
            }]
        );
        assert!(e.epoch_values.is_empty() && e.daily_values.is_empty());
    }
}
