//! The legacy `{"sourceUpdate": {...}}` webhook, still sent to customers who have not switched.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{
    event::{ConnectionChange, DaySpan, Envelope, Event, InstantSpan, ParseError},
    fields::{
        day, id_text, instant, object, optional_string, positive_i32, required_string, short,
        type_ids, Form,
    },
};

/// The `event_type` a legacy body is filed under: it has no `type` of its own.
pub const LEGACY_EVENT_TYPE: &str = "sourceUpdate";

const DAILY_PART: &str = "/v5/dailyDynamicValues";
const EPOCH_PART: &str = "/v5/dynamicEpochValues";

/// Whom a legacy body is about, as far as it can be read.
pub(super) fn envelope(update: &Value) -> Envelope {
    Envelope {
        event_type: Some(LEGACY_EVENT_TYPE.to_owned()),
        end_user_id: id_text(update.get("authenticationToken")),
        end_user_alias: id_text(update.get("partnerUserID")),
    }
}

/// Reads the value of `sourceUpdate`; error fields are given from the body's root.
pub(super) fn parse(update: &Value) -> Result<Event, ParseError> {
    read(object(update, LEGACY_EVENT_TYPE)?).map_err(|e| e.within(LEGACY_EVENT_TYPE))
}

fn read(update: &Map<String, Value>) -> Result<Event, ParseError> {
    required_string(update.get("authenticationToken"), "authenticationToken")?;
    optional_string(update.get("partnerUserID"), "partnerUserID")?;
    let data_source_id = source_id(update.get("dataSource"), "dataSource")?;
    // Legacy bodies have no timestampType: a number is unix milliseconds, a string ISO 8601.
    let created_at = match update.get("createdAt") {
        None | Some(Value::Null) => None,
        at => Some(instant(at, "createdAt", None)?),
    };
    let mut daily = part(update, DAILY_PART)?
        .map(|p| daily_span(p, data_source_id).map_err(|e| e.within(DAILY_PART)))
        .transpose()?;
    let mut epoch = part(update, EPOCH_PART)?
        .map(|p| epoch_span(p, data_source_id).map_err(|e| e.within(EPOCH_PART)))
        .transpose()?;
    if let Some(trigger) = trigger(update, data_source_id)? {
        // A body with both shapes names the same change twice; the per-endpoint parts are
        // the more precise (they list the types).
        daily = daily.or(trigger.daily);
        epoch = epoch.or(trigger.epoch);
    }
    let connection = connection(update, data_source_id, created_at)?;
    if daily.is_none() && epoch.is_none() && connection.is_none() {
        return Err(ParseError::new(
            "",
            format!(
                "names none of {DAILY_PART}, {EPOCH_PART}, updateType, connectionStatus: \
                 nothing to do"
            ),
        ));
    }
    Ok(Event::Legacy {
        daily,
        epoch,
        connection,
    })
}

/// `dataSource`: a positive 32-bit integer, as a number or (in older bodies) a string of
/// decimal digits, `"8"`.
fn source_id(value: Option<&Value>, field: &str) -> Result<i32, ParseError> {
    match value {
        Some(Value::String(text)) => text
            .parse::<i32>()
            .ok()
            .filter(|n| *n > 0 && text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                ParseError::new(
                    field,
                    format!(
                        "expected a positive 32-bit integer or a string of one, got {}",
                        short(&Value::String(text.clone()))
                    ),
                )
            }),
        other => positive_i32(other, field),
    }
}

/// The spans of the older trigger (API v4 era): the span at the top of `sourceUpdate` and
/// `updateType` saying which dimension changed (`MINUTE` epoch, `DAILY`, or `BOTH`), with no
/// list of types, so every type may have changed: the spans carry no types (all types).
struct Trigger {
    daily: Option<DaySpan>,
    epoch: Option<InstantSpan>,
}

fn trigger(
    update: &Map<String, Value>,
    data_source_id: i32,
) -> Result<Option<Trigger>, ParseError> {
    let (epoch, daily) = match update.get("updateType") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("MINUTE") => (true, false),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("DAILY") => (false, true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("BOTH") => (true, true),
        Some(other) => {
            return Err(ParseError::new(
                "updateType",
                format!(
                    "must be \"MINUTE\", \"DAILY\" or \"BOTH\", got {}",
                    short(other)
                ),
            ))
        }
    };
    let start = instant(update.get("startTimestamp"), "startTimestamp", None)?;
    let end = instant(update.get("endTimestamp"), "endTimestamp", None)?;
    if start > end {
        return Err(ParseError::new(
            "startTimestamp",
            format!("{start} is after endTimestamp {end}"),
        ));
    }
    Ok(Some(Trigger {
        // The days the span touches, in UTC as Thryve's days are.
        daily: daily.then(|| DaySpan {
            data_source_id,
            data_type_ids: Vec::new(),
            start: start.date_naive(),
            end: end.date_naive(),
        }),
        epoch: epoch.then(|| InstantSpan {
            data_source_id,
            data_type_ids: Vec::new(),
            start,
            end,
        }),
    }))
}

fn part<'a>(
    update: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, ParseError> {
    match update.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => object(value, key).map(Some),
    }
}

fn daily_span(part: &Map<String, Value>, data_source_id: i32) -> Result<DaySpan, ParseError> {
    let start = either(
        part,
        ("startDay", Form::Iso),
        ("startTimestampUnix", Form::Unix),
        day,
    )?;
    let end = either(
        part,
        ("endDay", Form::Iso),
        ("endTimestampUnix", Form::Unix),
        day,
    )?;
    if start > end {
        return Err(ParseError::new(
            "startDay",
            format!("{start} is after endDay {end}"),
        ));
    }
    Ok(DaySpan {
        data_source_id,
        data_type_ids: type_ids(part.get("dailyDynamicValueTypes"), "dailyDynamicValueTypes")?,
        start,
        end,
    })
}

fn epoch_span(part: &Map<String, Value>, data_source_id: i32) -> Result<InstantSpan, ParseError> {
    // The unix pair is exact; the ISO pair is often cut to the minute.
    let start = either(
        part,
        ("startTimestampUnix", Form::Unix),
        ("startTimestamp", Form::Iso),
        instant,
    )?;
    let end = either(
        part,
        ("endTimestampUnix", Form::Unix),
        ("endTimestamp", Form::Iso),
        instant,
    )?;
    if start > end {
        return Err(ParseError::new(
            "startTimestamp",
            format!("{start} is after endTimestamp {end}"),
        ));
    }
    Ok(InstantSpan {
        data_source_id,
        data_type_ids: type_ids(part.get("dynamicValueTypes"), "dynamicValueTypes")?,
        start,
        end,
    })
}

/// `day` or `instant`: reads one field in a given form.
type Reader<T> = fn(Option<&Value>, &str, Option<Form>) -> Result<T, ParseError>;

/// The first of two spellings that is present (and not null), read in its own form.
fn either<T>(
    part: &Map<String, Value>,
    (preferred, preferred_form): (&str, Form),
    (fallback, fallback_form): (&str, Form),
    read: Reader<T>,
) -> Result<T, ParseError> {
    let present = |key: &str| part.get(key).filter(|v| !v.is_null());
    match (present(preferred), present(fallback)) {
        (Some(v), _) => read(Some(v), preferred, Some(preferred_form)),
        (None, Some(v)) => read(Some(v), fallback, Some(fallback_form)),
        (None, None) => Err(ParseError::new(
            preferred,
            format!("missing, and so is {fallback}"),
        )),
    }
}

fn connection(
    update: &Map<String, Value>,
    data_source_id: i32,
    created_at: Option<DateTime<Utc>>,
) -> Result<Option<ConnectionChange>, ParseError> {
    let connected = match update.get("connectionStatus") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("NEW") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("DELETED") => false,
        Some(other) => {
            return Err(ParseError::new(
                "connectionStatus",
                format!("must be \"NEW\" or \"DELETED\", got {}", short(other)),
            ))
        }
    };
    // Older bodies have no createdAt: the change then counts from when it was received.
    Ok(Some(ConnectionChange {
        data_source_id,
        connected,
        at: created_at,
    }))
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone};
    use serde_json::{json, Value};

    use super::super::{parse as parse_body, Parsed};
    use super::*;

    fn parsed(update: Value) -> Parsed {
        parse_body(json!({ "sourceUpdate": update }).as_object().unwrap())
    }

    fn event(update: Value) -> Event {
        match parsed(update.clone()) {
            Parsed::Valid(n) => n.event,
            other => panic!("expected valid, got {other:?} for {update}"),
        }
    }

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    #[test]
    fn both_spans_with_the_envelope_taken_from_the_update() {
        let update = json!({"authenticationToken": "u1", "partnerUserID": "alias-1", "dataSource": 1,
            "createdAt": "2020-02-26T16:54:30Z",
            "/v5/dailyDynamicValues": {"startDay": "2020-02-26", "endDay": "2020-02-26",
                "dailyDynamicValueTypes": [2001, 2000, 2001],
                "startTimestampUnix": 1582675200000_i64, "endTimestampUnix": 1582675200000_i64},
            "/v5/dynamicEpochValues": {"startTimestamp": "2020-02-26T12:38:00Z", "endTimestamp": "2020-02-26T16:55:00Z",
                "dynamicValueTypes": [1012, 3000],
                "startTimestampUnix": 1582717080123_i64, "endTimestampUnix": 1582736100456_i64}});
        let Parsed::Valid(n) = parsed(update) else {
            panic!()
        };
        assert_eq!(n.event_type, "sourceUpdate");
        assert_eq!(n.end_user_id, "u1");
        assert_eq!(n.end_user_alias.as_deref(), Some("alias-1"));
        assert_eq!(
            n.event,
            Event::Legacy {
                daily: Some(DaySpan {
                    data_source_id: 1,
                    data_type_ids: vec![2000, 2001],
                    start: ymd(2020, 2, 26),
                    end: ymd(2020, 2, 26),
                }),
                // The unix pair wins: it keeps the milliseconds the ISO pair drops.
                epoch: Some(InstantSpan {
                    data_source_id: 1,
                    data_type_ids: vec![1012, 3000],
                    start: at(1582717080123),
                    end: at(1582736100456),
                }),
                connection: None,
            }
        );
    }

    #[test]
    fn each_part_in_either_spelling() {
        let base = |key: &str, part: Value| json!({"authenticationToken": "u", "dataSource": 3, key: part});
        let daily = |start, end| Event::Legacy {
            daily: Some(DaySpan {
                data_source_id: 3,
                data_type_ids: vec![2000],
                start,
                end,
            }),
            epoch: None,
            connection: None,
        };
        let epoch = |start, end| Event::Legacy {
            daily: None,
            epoch: Some(InstantSpan {
                data_source_id: 3,
                data_type_ids: vec![3000],
                start,
                end,
            }),
            connection: None,
        };
        let cases = [
            (
                base(
                    DAILY_PART,
                    json!({"startDay": "2024-01-01", "endDay": "2024-01-31", "dailyDynamicValueTypes": [2000]}),
                ),
                daily(ymd(2024, 1, 1), ymd(2024, 1, 31)),
            ),
            (
                base(
                    DAILY_PART,
                    json!({"startTimestampUnix": 1704067200000_i64, "endTimestampUnix": 1706659200000_i64, "dailyDynamicValueTypes": [2000]}),
                ),
                daily(ymd(2024, 1, 1), ymd(2024, 1, 31)),
            ),
            (
                base(
                    DAILY_PART,
                    json!({"startDay": null, "startTimestampUnix": 1704067200000_i64, "endDay": "2024-01-02", "dailyDynamicValueTypes": [2000]}),
                ),
                daily(ymd(2024, 1, 1), ymd(2024, 1, 2)),
            ),
            (
                base(
                    EPOCH_PART,
                    json!({"startTimestamp": "2020-02-26T12:38:00Z", "endTimestamp": "2020-02-26T16:55:00Z", "dynamicValueTypes": [3000]}),
                ),
                epoch(at(1582720680000), at(1582736100000)),
            ),
            (
                base(
                    EPOCH_PART,
                    json!({"startTimestampUnix": 1582720680000_i64, "endTimestampUnix": 1582736100000_i64, "dynamicValueTypes": [3000]}),
                ),
                epoch(at(1582720680000), at(1582736100000)),
            ),
        ];
        for (update, expected) in cases {
            assert_eq!(event(update.clone()), expected, "{update}");
        }
    }

    #[test]
    fn connection_status_at_created_at() {
        for (status, created_at, connected, when) in [
            (
                "NEW",
                json!("2020-02-26T16:54:30Z"),
                true,
                at(1582736070000),
            ),
            (
                "DELETED",
                json!("2020-02-26T16:54:30Z"),
                false,
                at(1582736070000),
            ),
            ("new", json!(1582736070000_i64), true, at(1582736070000)),
        ] {
            let update = json!({"authenticationToken": "u", "dataSource": 5,
                "connectionStatus": status, "createdAt": created_at});
            assert_eq!(
                event(update),
                Event::Legacy {
                    daily: None,
                    epoch: None,
                    connection: Some(ConnectionChange {
                        data_source_id: 5,
                        connected,
                        at: Some(when),
                    }),
                },
                "{status}"
            );
        }
    }

    #[test]
    fn the_older_trigger_names_a_span_and_a_dimension_but_no_types() {
        let trigger = |update_type: &str, source: Value| {
            json!({"authenticationToken": "u", "partnerUserID": "p", "dataSource": source,
                "startTimestamp": "2019-08-21T21:17:00Z", "endTimestamp": "2019-08-22T10:00:00Z",
                "updateType": update_type})
        };
        let epoch = InstantSpan {
            data_source_id: 8,
            data_type_ids: vec![],
            start: at(1566422220000),
            end: at(1566468000000),
        };
        let daily = DaySpan {
            data_source_id: 8,
            data_type_ids: vec![],
            start: ymd(2019, 8, 21),
            end: ymd(2019, 8, 22),
        };
        for (update_type, source, expected_daily, expected_epoch) in [
            ("MINUTE", json!("8"), None, Some(epoch.clone())),
            ("DAILY", json!(8), Some(daily.clone()), None),
            ("both", json!("8"), Some(daily.clone()), Some(epoch.clone())),
        ] {
            assert_eq!(
                event(trigger(update_type, source)),
                Event::Legacy {
                    daily: expected_daily,
                    epoch: expected_epoch,
                    connection: None
                },
                "{update_type}"
            );
        }
        // The typed per-endpoint part wins over the untyped trigger for its dimension.
        let mut both = trigger("BOTH", json!("8"));
        both[EPOCH_PART] = json!({"startTimestampUnix": 1566422220000_i64,
            "endTimestampUnix": 1566468000000_i64, "dynamicValueTypes": [3000]});
        let Event::Legacy {
            daily: d,
            epoch: Some(e),
            ..
        } = event(both)
        else {
            panic!()
        };
        assert_eq!(d, Some(daily));
        assert_eq!(e.data_type_ids, vec![3000]);
    }

    #[test]
    fn a_connection_change_without_created_at_counts_from_its_receipt() {
        let update = json!({"authenticationToken": "u", "partnerUserID": "p",
            "dataSource": "8", "connectionStatus": "DELETED"});
        assert_eq!(
            event(update),
            Event::Legacy {
                daily: None,
                epoch: None,
                connection: Some(ConnectionChange {
                    data_source_id: 8,
                    connected: false,
                    at: None,
                }),
            }
        );
    }

    #[test]
    fn bad_fields_are_named_from_the_root() {
        let ok_daily = json!({"startDay": "2024-01-01", "endDay": "2024-01-01", "dailyDynamicValueTypes": [1]});
        let with = |extra: Value| {
            let mut update =
                json!({"authenticationToken": "u", "dataSource": 1, DAILY_PART: ok_daily});
            for (k, v) in extra.as_object().unwrap() {
                update[k] = v.clone();
            }
            update
        };
        let cases = [
            (json!([1]), "sourceUpdate: expected an object, got an array"),
            (
                json!({"dataSource": 1, DAILY_PART: ok_daily}),
                "sourceUpdate.authenticationToken: missing",
            ),
            (
                with(json!({"authenticationToken": ""})),
                "sourceUpdate.authenticationToken: is empty",
            ),
            (
                with(json!({"partnerUserID": 7})),
                "sourceUpdate.partnerUserID: expected a string, got a number",
            ),
            (
                with(json!({"dataSource": "1x"})),
                "sourceUpdate.dataSource: expected a positive 32-bit integer or a string of one, got \"1x\"",
            ),
            (
                with(json!({"dataSource": "+8"})),
                "sourceUpdate.dataSource: expected a positive 32-bit integer or a string of one",
            ),
            (
                with(json!({"dataSource": "0"})),
                "sourceUpdate.dataSource: expected a positive 32-bit integer or a string of one",
            ),
            (
                with(json!({"dataSource": 1.5})),
                "sourceUpdate.dataSource: expected a positive 32-bit integer",
            ),
            (
                with(json!({"updateType": "HOURLY", "startTimestamp": "2019-08-21T21:17:00Z", "endTimestamp": "2019-08-22T10:00:00Z"})),
                "sourceUpdate.updateType: must be \"MINUTE\", \"DAILY\" or \"BOTH\", got \"HOURLY\"",
            ),
            (
                with(json!({"updateType": "MINUTE", "endTimestamp": "2019-08-22T10:00:00Z"})),
                "sourceUpdate.startTimestamp: missing",
            ),
            (
                with(json!({"updateType": "DAILY", "startTimestamp": "2019-08-23T21:17:00Z", "endTimestamp": "2019-08-22T10:00:00Z"})),
                "sourceUpdate.startTimestamp: 2019-08-23 21:17:00 UTC is after endTimestamp",
            ),
            (
                with(json!({"createdAt": "yesterday"})),
                "sourceUpdate.createdAt: \"yesterday\" is not an ISO 8601",
            ),
            (
                json!({"authenticationToken": "u", "dataSource": 1, "createdAt": "2020-02-26T16:54:30Z"}),
                "sourceUpdate: names none of /v5/dailyDynamicValues, /v5/dynamicEpochValues, updateType, connectionStatus",
            ),
            (
                with(json!({"connectionStatus": "PAUSED", "createdAt": "2020-02-26T16:54:30Z"})),
                "sourceUpdate.connectionStatus: must be \"NEW\" or \"DELETED\", got \"PAUSED\"",
            ),
            (
                with(json!({DAILY_PART: "2024-01-01"})),
                "sourceUpdate./v5/dailyDynamicValues: expected an object, got a string",
            ),
            (
                with(json!({DAILY_PART: {"endDay": "2024-01-01", "dailyDynamicValueTypes": [1]}})),
                "sourceUpdate./v5/dailyDynamicValues.startDay: missing, and so is startTimestampUnix",
            ),
            (
                with(json!({DAILY_PART: {"startDay": "2024-01-02", "endDay": "2024-01-01", "dailyDynamicValueTypes": [1]}})),
                "sourceUpdate./v5/dailyDynamicValues.startDay: 2024-01-02 is after endDay 2024-01-01",
            ),
            (
                with(json!({DAILY_PART: {"startDay": 1704067200000_i64, "endDay": "2024-01-01", "dailyDynamicValueTypes": [1]}})),
                "sourceUpdate./v5/dailyDynamicValues.startDay: timestampType is iso",
            ),
            (
                with(json!({DAILY_PART: {"startDay": "2024-01-01", "endDay": "2024-01-01"}})),
                "sourceUpdate./v5/dailyDynamicValues.dailyDynamicValueTypes: missing",
            ),
            (
                with(json!({EPOCH_PART: {"startTimestampUnix": "1582720680000", "endTimestampUnix": 1582736100000_i64, "dynamicValueTypes": [1]}})),
                "sourceUpdate./v5/dynamicEpochValues.startTimestampUnix: timestampType is unix",
            ),
            (
                with(json!({EPOCH_PART: {"startTimestampUnix": 2, "endTimestampUnix": 1, "dynamicValueTypes": [1]}})),
                "sourceUpdate./v5/dynamicEpochValues.startTimestamp: 1970-01-01 00:00:00.002 UTC is after",
            ),
            (
                with(json!({EPOCH_PART: {"startTimestampUnix": 1, "endTimestampUnix": 2, "dynamicValueTypes": []}})),
                "sourceUpdate./v5/dynamicEpochValues.dynamicValueTypes: is empty",
            ),
        ];
        for (update, expected) in cases {
            let Parsed::Invalid { envelope, error } = parsed(update.clone()) else {
                panic!("expected invalid: {update}")
            };
            assert_eq!(envelope.event_type.as_deref(), Some(LEGACY_EVENT_TYPE));
            let got = error.to_string();
            assert!(
                got.starts_with(expected),
                "{got:?} should start with {expected:?}"
            );
        }
    }

    #[test]
    fn an_invalid_update_still_names_its_user() {
        let Parsed::Invalid { envelope, .. } =
            parsed(json!({"authenticationToken": "u7", "partnerUserID": "p", "dataSource": 0}))
        else {
            panic!()
        };
        assert_eq!(envelope.end_user_id.as_deref(), Some("u7"));
        assert_eq!(envelope.end_user_alias.as_deref(), Some("p"));
    }

    #[test]
    fn a_type_field_takes_precedence_over_source_update() {
        let body = json!({"type": "something.else", "sourceUpdate": {"authenticationToken": "u"}});
        assert!(matches!(
            parse_body(body.as_object().unwrap()),
            Parsed::Unknown { .. }
        ));
    }
}
