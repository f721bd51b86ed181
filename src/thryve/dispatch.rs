//! Classifies a decoded webhook body as a known notification, a known type with bad fields,
//! or a type the bridge does not handle, and hands each known type to its reader.

use serde_json::{Map, Value};

use super::{
    event::{DaySpan, Envelope, Event, InstantSpan, Notification, ParseError, Parsed},
    fields::{
        day, id_text, instant, object, optional_string, positive_i32, required_string,
        timestamp_form, type_ids, Form,
    },
    legacy::{self, LEGACY_EVENT_TYPE},
    push,
};

const CONNECT_TYPES: [&str; 2] = ["notification.source.connect", "webhook.source.connect"];
const DISCONNECT_TYPES: [&str; 2] = [
    "notification.source.disconnect",
    "webhook.source.disconnect",
];
const EPOCH_TYPE: &str = "notification.data.epoch.createupdate";
const DAILY_TYPE: &str = "notification.data.daily.createupdate";
const EPOCH_PUSH_TYPES: [&str; 2] = ["event.data.epoch.create", "event.data.epoch.update"];
const DAILY_PUSH_TYPES: [&str; 2] = ["event.data.daily.create", "event.data.daily.update"];

/// Reads a webhook body that has already been decoded into a JSON object.
///
/// ```
/// use thryve_bridge::thryve::{parse, Event, Parsed};
/// let body = serde_json::json!({
///     "endUserId": "u1", "timestampType": "unix", "type": "notification.source.connect",
///     "data": {"timestamp": 1765635343541_i64, "dataSourceId": 8}
/// });
/// let Parsed::Valid(n) = parse(body.as_object().unwrap()) else { panic!() };
/// assert!(matches!(n.event, Event::SourceConnection { data_source_id: 8, connected: true, .. }));
/// ```
pub fn parse(body: &Map<String, Value>) -> Parsed {
    let envelope = Envelope {
        event_type: id_text(body.get("type")),
        end_user_id: id_text(body.get("endUserId")),
        end_user_alias: id_text(body.get("endUserAlias")),
    };
    let Some(event_type) = envelope.event_type.as_deref() else {
        return match body.get("sourceUpdate") {
            Some(update) => classify(LEGACY_EVENT_TYPE, legacy::envelope(update), || {
                legacy::parse(update)
            }),
            None => Parsed::Unknown { envelope },
        };
    };
    let kind = if CONNECT_TYPES.contains(&event_type) {
        Kind::Notice(Notice::Connect(true))
    } else if DISCONNECT_TYPES.contains(&event_type) {
        Kind::Notice(Notice::Connect(false))
    } else if event_type == EPOCH_TYPE {
        Kind::Notice(Notice::Epoch)
    } else if event_type == DAILY_TYPE {
        Kind::Notice(Notice::Daily)
    } else if EPOCH_PUSH_TYPES.contains(&event_type) {
        Kind::EpochPush
    } else if DAILY_PUSH_TYPES.contains(&event_type) {
        Kind::DailyPush
    } else {
        return Parsed::Unknown { envelope };
    };
    classify(event_type, envelope.clone(), || parse_known(body, kind))
}

/// Valid or invalid, for a body whose type is known.
fn classify(
    event_type: &str,
    envelope: Envelope,
    event: impl FnOnce() -> Result<Event, ParseError>,
) -> Parsed {
    let envelope = Envelope {
        event_type: Some(event_type.to_owned()),
        ..envelope
    };
    match event() {
        Ok(event) => Parsed::Valid(Notification {
            event_type: event_type.to_owned(),
            end_user_id: envelope.end_user_id.unwrap_or_default(),
            end_user_alias: envelope.end_user_alias,
            event,
        }),
        Err(error) => Parsed::Invalid { envelope, error },
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Notice(Notice),
    EpochPush,
    DailyPush,
}

/// The notification kinds, whose `data` is one object.
#[derive(Clone, Copy)]
enum Notice {
    Connect(bool),
    Epoch,
    Daily,
}

fn parse_known(body: &Map<String, Value>, kind: Kind) -> Result<Event, ParseError> {
    required_string(body.get("endUserId"), "endUserId")?;
    optional_string(body.get("endUserAlias"), "endUserAlias")?;
    let form = timestamp_form(body)?;
    let data = body
        .get("data")
        .ok_or_else(|| ParseError::new("data", "missing"))?;
    match kind {
        Kind::EpochPush => push::epoch(data, form).map(Event::EpochPush),
        Kind::DailyPush => push::daily(data, form).map(Event::DailyPush),
        Kind::Notice(notice) => notice_data(object(data, "data")?, notice, form),
    }
}

fn notice_data(
    data: &Map<String, Value>,
    notice: Notice,
    form: Option<Form>,
) -> Result<Event, ParseError> {
    let data_source_id = positive_i32(data.get("dataSourceId"), "data.dataSourceId")?;
    match notice {
        Notice::Connect(connected) => Ok(Event::SourceConnection {
            data_source_id,
            connected,
            at: instant(data.get("timestamp"), "data.timestamp", form)?,
        }),
        Notice::Epoch => {
            let start = instant(data.get("startTimestamp"), "data.startTimestamp", form)?;
            let end = instant(data.get("endTimestamp"), "data.endTimestamp", form)?;
            if start > end {
                return Err(ParseError::new(
                    "data.startTimestamp",
                    format!("{start} is after data.endTimestamp {end}"),
                ));
            }
            Ok(Event::EpochData(InstantSpan {
                data_source_id,
                data_type_ids: type_ids(data.get("dataTypeIds"), "data.dataTypeIds")?,
                start,
                end,
            }))
        }
        Notice::Daily => {
            let start = day(data.get("startDay"), "data.startDay", form)?;
            let end = day(data.get("endDay"), "data.endDay", form)?;
            if start > end {
                return Err(ParseError::new(
                    "data.startDay",
                    format!("{start} is after data.endDay {end}"),
                ));
            }
            Ok(Event::DailyData(DaySpan {
                data_source_id,
                data_type_ids: type_ids(data.get("dataTypeIds"), "data.dataTypeIds")?,
                start,
                end,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::thryve::fields::{MAX_DATA_TYPES, MAX_DISTINCT_DATA_TYPES, MAX_ID_BYTES};
    use serde_json::json;

    fn parsed(v: Value) -> Parsed {
        parse(v.as_object().expect("object"))
    }

    fn reason(v: Value) -> String {
        match parsed(v) {
            Parsed::Invalid { error, .. } => error.to_string(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    fn epoch(data: Value) -> Value {
        json!({"endUserId": "u", "timestampType": "unix",
               "type": "notification.data.epoch.createupdate", "data": data})
    }

    #[test]
    fn unix_epoch_notification_sorts_and_dedups_types() {
        let p = parsed(epoch(json!({"startTimestamp": 1763973390000_i64,
            "endTimestamp": 1763973390000_i64, "dataSourceId": 8, "dataTypeIds": [3000, 1000, 3000]})));
        let Parsed::Valid(n) = p else { panic!("{p:?}") };
        let Event::EpochData(span) = n.event else {
            panic!()
        };
        assert_eq!(span.data_type_ids, vec![1000, 3000]);
        assert_eq!(span.start, span.end);
        assert_eq!(span.start.timestamp_millis(), 1763973390000);
    }

    #[test]
    fn iso_daily_notification() {
        let p = parsed(
            json!({"endUserId": "u", "endUserAlias": "a", "timestampType": "iso",
            "type": "notification.data.daily.createupdate",
            "data": {"startDay": "2022-09-07", "endDay": "2022-09-08", "dataSourceId": 1, "dataTypeIds": [2000]}}),
        );
        let Parsed::Valid(n) = p else { panic!("{p:?}") };
        assert_eq!(n.end_user_alias.as_deref(), Some("a"));
        assert_eq!(
            n.event,
            Event::DailyData(DaySpan {
                data_source_id: 1,
                data_type_ids: vec![2000],
                start: NaiveDate::from_ymd_opt(2022, 9, 7).unwrap(),
                end: NaiveDate::from_ymd_opt(2022, 9, 8).unwrap(),
            })
        );
    }

    #[test]
    fn unix_day_is_the_utc_date() {
        let p = parsed(json!({"endUserId": "u", "timestampType": "unix",
            "type": "notification.data.daily.createupdate",
            "data": {"startDay": 1763510400000_i64, "endDay": 1766102400000_i64, "dataSourceId": 8, "dataTypeIds": [2000]}}));
        let Parsed::Valid(Notification {
            event: Event::DailyData(span),
            ..
        }) = p
        else {
            panic!("{p:?}")
        };
        assert_eq!(span.start, NaiveDate::from_ymd_opt(2025, 11, 19).unwrap());
        assert_eq!(span.end, NaiveDate::from_ymd_opt(2025, 12, 19).unwrap());
    }

    #[test]
    fn both_connect_spellings() {
        for (t, connected) in [
            ("notification.source.connect", true),
            ("webhook.source.connect", true),
            ("notification.source.disconnect", false),
            ("webhook.source.disconnect", false),
        ] {
            let p = parsed(json!({"endUserId": "u", "timestampType": "iso", "type": t,
                "data": {"timestamp": "2022-09-07T17:40:00Z", "dataSourceId": 1}}));
            let Parsed::Valid(n) = p else { panic!("{p:?}") };
            assert!(
                matches!(n.event, Event::SourceConnection { connected: c, .. } if c == connected),
                "{t}"
            );
        }
    }

    #[test]
    fn quarantine_reasons_name_the_field() {
        let cases = [
            (
                epoch(json!({"startTimestamp": 1, "endTimestamp": 2, "dataTypeIds": [1]})),
                "data.dataSourceId: missing",
            ),
            (
                epoch(
                    json!({"startTimestamp": "x", "endTimestamp": 2, "dataSourceId": 1, "dataTypeIds": [1]}),
                ),
                "data.startTimestamp: timestampType is unix",
            ),
            (
                epoch(
                    json!({"startTimestamp": 5, "endTimestamp": 2, "dataSourceId": 1, "dataTypeIds": [1]}),
                ),
                "data.startTimestamp: 1970-01-01 00:00:00.005 UTC is after",
            ),
            (
                epoch(
                    json!({"startTimestamp": -5, "endTimestamp": 2, "dataSourceId": 1, "dataTypeIds": [1]}),
                ),
                "data.startTimestamp: -5 ms is outside",
            ),
            (
                epoch(
                    json!({"startTimestamp": 1, "endTimestamp": 2, "dataSourceId": 1, "dataTypeIds": []}),
                ),
                "data.dataTypeIds: is empty",
            ),
            (
                epoch(
                    json!({"startTimestamp": 1, "endTimestamp": 2, "dataSourceId": 1, "dataTypeIds": [1, "x"]}),
                ),
                "data.dataTypeIds[1]: expected a positive 32-bit integer",
            ),
            (
                epoch(
                    json!({"startTimestamp": 1, "endTimestamp": 2, "dataSourceId": 4294967296_i64, "dataTypeIds": [1]}),
                ),
                "data.dataSourceId: expected a positive 32-bit integer",
            ),
            (
                json!({"endUserId": "u", "timestampType": "epoch", "type": EPOCH_TYPE, "data": {}}),
                "timestampType: must be \"iso\" or \"unix\"",
            ),
            (
                json!({"timestampType": "unix", "type": EPOCH_TYPE, "data": {}}),
                "endUserId: missing",
            ),
            (
                json!({"endUserId": "u", "type": EPOCH_TYPE}),
                "data: missing",
            ),
        ];
        for (body, expected) in cases {
            let got = reason(body);
            assert!(
                got.starts_with(expected),
                "{got:?} should start with {expected:?}"
            );
        }
    }

    #[test]
    fn instants_and_days_outside_1970_to_9999_name_the_range() {
        let epoch_at = |start: Value| {
            epoch(
                json!({"startTimestamp": start, "endTimestamp": 1, "dataSourceId": 1, "dataTypeIds": [1]}),
            )
        };
        let daily_at = |start: Value| {
            json!({"endUserId": "u", "type": DAILY_TYPE,
                   "data": {"startDay": start, "endDay": "2024-01-01", "dataSourceId": 1, "dataTypeIds": [1]}})
        };
        for body in [
            epoch_at(json!(-1)),
            epoch_at(json!(253_402_300_800_000_i64)),
            epoch_at(json!(8_210_298_326_400_000_i64)),
            daily_at(json!(-86_400_000)),
            daily_at(json!(253_402_300_800_000_i64)),
        ] {
            assert!(
                reason(body.clone()).contains("ms is outside 1970-01-01..9999-12-31"),
                "{body}"
            );
        }
        for text in [
            "1969-12-31T23:59:59Z",
            "+10000-01-01T00:00:00Z",
            "+262143-01-01T00:00:00Z",
            "-0001-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "+10000-01-01T00:00:00",
        ] {
            let mut body = epoch_at(json!(text));
            body["timestampType"] = json!("iso");
            body["data"]["endTimestamp"] = json!("2024-01-01T00:00:00Z");
            let got = reason(body);
            assert!(got.starts_with("data.startTimestamp: "), "{got}");
            assert!(
                got.contains("is outside 1970-01-01..9999-12-31"),
                "{text}: {got}"
            );
        }
        for text in ["1969-12-31", "+10000-01-01", "+262143-01-01", "-0001-01-01"] {
            let got = reason(daily_at(json!(text)));
            assert!(got.starts_with("data.startDay: "), "{got}");
            assert!(
                got.contains("is outside 1970-01-01..9999-12-31"),
                "{text}: {got}"
            );
        }
        // A bad month is unreadable, not out of range.
        assert!(reason(daily_at(json!("2024-13-01"))).contains("is not a YYYY-MM-DD date"));
    }

    #[test]
    fn over_long_ids_are_quarantined_and_kept_out_of_the_envelope() {
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let mut body = epoch(
            json!({"startTimestamp": 1, "endTimestamp": 2, "dataSourceId": 1, "dataTypeIds": [1]}),
        );
        assert!(matches!(parsed(body.clone()), Parsed::Valid(_)));
        body["endUserAlias"] = json!(long);
        assert_eq!(
            reason(body.clone()),
            "endUserAlias: 1025 bytes, more than the 1024 accepted"
        );
        body["endUserId"] = json!(long);
        let Parsed::Invalid { envelope, error } = parsed(body) else {
            panic!()
        };
        assert_eq!(
            error.to_string(),
            "endUserId: 1025 bytes, more than the 1024 accepted"
        );
        assert_eq!(
            (envelope.end_user_id, envelope.end_user_alias),
            (None, None)
        );
        let Parsed::Unknown { envelope } =
            parsed(json!({"type": long, "endUserId": "x".repeat(MAX_ID_BYTES)}))
        else {
            panic!()
        };
        assert_eq!(envelope.event_type, None);
        assert_eq!(envelope.end_user_id.map(|u| u.len()), Some(MAX_ID_BYTES));
    }

    #[test]
    fn data_types_are_capped_before_and_after_de_duplication() {
        let with_types = |types: Vec<i64>| {
            epoch(
                json!({"startTimestamp": 1, "endTimestamp": 2, "dataSourceId": 1, "dataTypeIds": types}),
            )
        };
        let repeated: Vec<i64> = (0..MAX_DATA_TYPES as i64).map(|i| 1 + i % 10).collect();
        assert!(matches!(parsed(with_types(repeated)), Parsed::Valid(_)));
        let distinct: Vec<i64> = (1..=MAX_DISTINCT_DATA_TYPES as i64).collect();
        assert!(matches!(parsed(with_types(distinct)), Parsed::Valid(_)));
        let one_more: Vec<i64> = (1..=MAX_DISTINCT_DATA_TYPES as i64 + 1).collect();
        assert_eq!(
            reason(with_types(one_more)),
            "data.dataTypeIds: 1001 distinct data types, more than the 1000 accepted"
        );
        let huge: Vec<i64> = (1..=150_000).collect();
        assert_eq!(
            reason(with_types(huge)),
            "data.dataTypeIds: 150000 entries, more than the 10000 accepted"
        );
    }

    #[test]
    fn reasons_quote_at_most_64_bytes_of_the_input() {
        let long = "é".repeat(10_000);
        let mut body = epoch(
            json!({"startTimestamp": long, "endTimestamp": 2, "dataSourceId": 1, "dataTypeIds": [1]}),
        );
        body["timestampType"] = json!("iso");
        assert!(reason(body.clone()).len() < 200);
        body["timestampType"] = json!({"k": long});
        assert!(reason(body).len() < 200);
    }

    #[test]
    fn unknown_and_missing_types_are_unknown() {
        assert!(
            matches!(parsed(json!({"type": "notification.measurement.x", "endUserId": "u"})),
            Parsed::Unknown { envelope } if envelope.end_user_id.as_deref() == Some("u"))
        );
        assert!(matches!(parsed(json!({})), Parsed::Unknown { .. }));
    }
}
