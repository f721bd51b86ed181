//! What a notification asks of the database: dirty spans, connection changes, pushed values.

use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};

use super::event::{
    ConnectionChange, DailyValue, DaySpan, EpochValue, Event, InstantSpan, Notification,
    SourceDailyValues, SourceEpochValues,
};

/// A span of data that changed: one user's source, some data types (none listed: all types),
/// inclusive instants or days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    Epoch(InstantSpan),
    Daily(DaySpan),
}

/// Everything one notification changes, for one end user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// What changed and must be fetched from Thryve (notifications, legacy deliveries).
    pub spans: Vec<Span>,
    /// What changed and is already stored: the times a data push's values cover.
    pub stored_spans: Vec<Span>,
    pub connections: Vec<ConnectionChange>,
    pub epoch_values: Vec<EpochValue>,
    pub daily_values: Vec<DailyValue>,
    /// `(dataSourceId, dataSourceName)` as a push names its sources.
    pub source_names: Vec<(i32, String)>,
}

/// Pushed epoch values closer than this in time share one stored span; further apart, each
/// cluster is its own. A span covers its values' own times (start to end, an instant being
/// its start), so sparse values make small spans rather than one that spans weeks.
pub const PUSH_SPAN_GAP: TimeDelta = TimeDelta::hours(1);

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
    /// A data push gives stored spans (already stored, nothing to fetch) and every value: per
    /// data-source element, its values clustered in time (epoch: each value covers its start
    /// to its end, or its start alone; values less than [`PUSH_SPAN_GAP`] apart share a span;
    /// daily: runs of consecutive days), each span listing its values' types, sorted and
    /// distinct. A legacy body gives its daily span, its epoch span and its connection
    /// change, whichever it has.
    ///
    /// ```
    /// use thryve_bridge::thryve::{parse, Parsed, Span};
    /// let body = serde_json::json!({"endUserId": "u", "timestampType": "unix",
    ///     "type": "event.data.daily.update", "data": [{"dataSourceId": 8, "dailyData": [
    ///         {"day": 1765584000000_i64, "dataTypeId": 3001, "value": "59"},
    ///         {"day": 1765670400000_i64, "dataTypeId": 1000, "value": "4200"}]}]});
    /// let Parsed::Valid(n) = parse(body.as_object().unwrap()) else { panic!() };
    /// let effects = n.event.effects();
    /// let [Span::Daily(span)] = &effects.stored_spans[..] else { panic!() };
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
                stored_spans: sources
                    .iter()
                    .flat_map(epoch_spans)
                    .map(Span::Epoch)
                    .collect(),
                epoch_values: sources.iter().flat_map(|s| s.values.clone()).collect(),
                source_names: names(
                    sources
                        .iter()
                        .map(|s| (s.data_source_id, &s.data_source_name)),
                ),
                ..Effects::default()
            },
            Event::DailyPush(sources) => Effects {
                stored_spans: sources
                    .iter()
                    .flat_map(day_spans)
                    .map(Span::Daily)
                    .collect(),
                daily_values: sources.iter().flat_map(|s| s.values.clone()).collect(),
                source_names: names(
                    sources
                        .iter()
                        .map(|s| (s.data_source_id, &s.data_source_name)),
                ),
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

/// The times one data source's pushed epoch values cover, clustered with [`PUSH_SPAN_GAP`].
fn epoch_spans(source: &SourceEpochValues) -> Vec<InstantSpan> {
    let mut covered: Vec<(DateTime<Utc>, DateTime<Utc>, i32)> = source
        .values
        .iter()
        .map(|v| (v.start, v.end.unwrap_or(v.start), v.data_type_id))
        .collect();
    covered.sort_unstable();
    clusters(covered, |reach, start| start - reach <= PUSH_SPAN_GAP)
        .into_iter()
        .map(|(start, end, types)| InstantSpan {
            data_source_id: source.data_source_id,
            data_type_ids: types,
            start,
            end,
        })
        .collect()
}

/// Runs of consecutive days among one data source's pushed daily values.
fn day_spans(source: &SourceDailyValues) -> Vec<DaySpan> {
    let mut covered: Vec<(NaiveDate, NaiveDate, i32)> = source
        .values
        .iter()
        .map(|v| (v.day, v.day, v.data_type_id))
        .collect();
    covered.sort_unstable();
    clusters(covered, |reach, start| {
        reach
            .checked_add_days(Days::new(1))
            .is_none_or(|after| start <= after)
    })
    .into_iter()
    .map(|(start, end, types)| DaySpan {
        data_source_id: source.data_source_id,
        data_type_ids: types,
        start,
        end,
    })
    .collect()
}

/// Sorted `(start, end, type)` items grouped while `joins(furthest end so far, next start)`:
/// each group's first start, furthest end, and types sorted and distinct.
fn clusters<T: Copy + Ord>(
    sorted: Vec<(T, T, i32)>,
    joins: impl Fn(T, T) -> bool,
) -> Vec<(T, T, Vec<i32>)> {
    let mut out: Vec<(T, T, Vec<i32>)> = Vec::new();
    for (start, end, type_id) in sorted {
        match out.last_mut() {
            Some((_, reach, types)) if start <= *reach || joins(*reach, start) => {
                *reach = (*reach).max(end);
                types.push(type_id);
            }
            _ => out.push((start, end, vec![type_id])),
        }
    }
    for (_, _, types) in &mut out {
        *types = distinct(types.iter().copied());
    }
    out
}

/// The named sources of a push, each once (the last name given wins).
fn names<'a>(sources: impl Iterator<Item = (i32, &'a Option<String>)>) -> Vec<(i32, String)> {
    let mut named: Vec<(i32, String)> = Vec::new();
    for (id, name) in sources {
        if let Some(name) = name {
            named.retain(|(other, _)| *other != id);
            named.push((id, name.clone()));
        }
    }
    named
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
    fn an_epoch_push_gives_stored_spans_per_source_with_values_and_every_value() {
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
        assert!(e.spans.is_empty(), "a push needs no fetch");
        assert_eq!(
            e.stored_spans,
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
    fn a_daily_push_spans_its_runs_of_consecutive_days() {
        let e = effects(
            json!({"endUserId": "u", "timestampType": "iso", "type": "event.data.daily.create",
            "data": [{"dataSourceId": 8, "dataSourceName": "Withings", "dailyData": [
                {"day": "2025-12-14", "dataTypeId": 3001, "value": "59"},
                {"day": "2025-12-10", "dataTypeId": 1000, "value": "4200"},
                {"day": "2025-12-11", "dataTypeId": 3001, "value": "57"},
                {"day": "2025-12-12", "dataTypeId": 3001, "value": "58"}]}]}),
        );
        let day = |d| NaiveDate::from_ymd_opt(2025, 12, d).unwrap();
        let span = |start, end, types: &[i32]| {
            Span::Daily(DaySpan {
                data_source_id: 8,
                data_type_ids: types.to_vec(),
                start: day(start),
                end: day(end),
            })
        };
        assert_eq!(
            e.stored_spans,
            vec![span(10, 12, &[1000, 3001]), span(14, 14, &[3001])]
        );
        assert!(e.spans.is_empty());
        assert_eq!(e.daily_values.len(), 4);
        assert_eq!(e.source_names, vec![(8, "Withings".to_owned())]);
        assert!(e.epoch_values.is_empty());
    }

    #[test]
    fn sparse_pushed_instants_make_tight_spans_not_their_hull() {
        // The observed shape: 9 instant values spread over 28 days in one push.
        let day_ms = 86_400_000_i64;
        let t0 = 1_760_000_000_000_i64;
        let points: Vec<Value> = (0..9)
            .map(|i| json!({"startTimestamp": t0 + i * 3 * day_ms + i * 1000, "dataTypeId": 5020, "value": "70"}))
            .collect();
        let e = effects(
            json!({"endUserId": "u", "timestampType": "unix", "type": "event.data.epoch.create",
                   "data": [{"dataSourceId": 8, "epochData": points}]}),
        );
        assert_eq!(e.stored_spans.len(), 9);
        for (i, span) in e.stored_spans.iter().enumerate() {
            let Span::Epoch(span) = span else { panic!() };
            let at_i = at(t0 + i as i64 * 3 * day_ms + i as i64 * 1000);
            assert_eq!((span.start, span.end), (at_i, at_i));
            assert_eq!(span.data_type_ids, vec![5020]);
        }
        // Values closer than the gap share one span covering exactly their times.
        let e = effects(
            json!({"endUserId": "u", "timestampType": "unix", "type": "event.data.epoch.create",
                   "data": [{"dataSourceId": 8, "epochData": [
                       {"startTimestamp": t0, "endTimestamp": t0 + 60_000, "dataTypeId": 1000, "value": "5"},
                       {"startTimestamp": t0 + 1_800_000, "dataTypeId": 3000, "value": "61"}]}]}),
        );
        assert_eq!(
            e.stored_spans,
            vec![Span::Epoch(InstantSpan {
                data_source_id: 8,
                data_type_ids: vec![1000, 3000],
                start: at(t0),
                end: at(t0 + 1_800_000),
            })]
        );
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
