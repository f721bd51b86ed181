//! Classifies a decoded webhook body as a known notification, a known type with bad fields,
//! or a type the bridge does not handle.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde_json::{Map, Value};

use super::{
    effects::ConnectionChange,
    legacy::{self, LEGACY_EVENT_TYPE},
    push::{self, SourceDailyValues, SourceEpochValues},
};

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
        event_type: body.get("type").and_then(Value::as_str).map(str::to_owned),
        end_user_id: body
            .get("endUserId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        end_user_alias: body
            .get("endUserAlias")
            .and_then(Value::as_str)
            .map(str::to_owned),
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

/// How timestamps are written. `None` when the body does not say: each value is then read by
/// its JSON type (number = unix milliseconds, string = ISO 8601).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    Iso,
    Unix,
}

fn timestamp_form(body: &Map<String, Value>) -> Result<Option<Form>, ParseError> {
    match body.get("timestampType") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("iso") => Ok(Some(Form::Iso)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("unix") => Ok(Some(Form::Unix)),
        Some(other) => Err(ParseError::new(
            "timestampType",
            format!("must be \"iso\" or \"unix\", got {other}"),
        )),
    }
}

/// Earliest and latest instants accepted: health data from before the Unix epoch or after
/// year 9999 is a sender bug, and both bounds fit every column type involved.
const MIN_MS: i64 = 0;
const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

pub(super) fn instant(
    value: Option<&Value>,
    field: &str,
    form: Option<Form>,
) -> Result<DateTime<Utc>, ParseError> {
    let value = value.ok_or_else(|| ParseError::new(field, "missing"))?;
    match (value, form) {
        (Value::Number(_), Some(Form::Unix) | None) => from_millis(value, field),
        (Value::String(s), Some(Form::Iso) | None) => parse_iso_instant(s)
            .ok_or_else(|| {
                ParseError::new(
                    field,
                    format!("{s:?} is not an ISO 8601 / RFC 3339 timestamp"),
                )
            })
            .and_then(|t| in_range(t, field)),
        (_, Some(Form::Unix)) => Err(ParseError::new(
            field,
            format!(
                "timestampType is unix: expected integer milliseconds, got {}",
                json_kind(value)
            ),
        )),
        (_, Some(Form::Iso)) => Err(ParseError::new(
            field,
            format!(
                "timestampType is iso: expected a timestamp string, got {}",
                json_kind(value)
            ),
        )),
        (_, None) => Err(ParseError::new(
            field,
            format!("expected a timestamp, got {}", json_kind(value)),
        )),
    }
}

pub(super) fn day(
    value: Option<&Value>,
    field: &str,
    form: Option<Form>,
) -> Result<NaiveDate, ParseError> {
    let value = value.ok_or_else(|| ParseError::new(field, "missing"))?;
    match (value, form) {
        // Thryve sends the milliseconds of 00:00 UTC; any other time of day names that UTC date.
        (Value::Number(_), Some(Form::Unix) | None) => Ok(from_millis(value, field)?.date_naive()),
        (Value::String(s), Some(Form::Iso) | None) => {
            let date = NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| ParseError::new(field, format!("{s:?} is not a YYYY-MM-DD date")))?;
            in_range(date.and_time(chrono::NaiveTime::MIN).and_utc(), field)?;
            Ok(date)
        }
        (_, Some(Form::Unix)) => Err(ParseError::new(
            field,
            format!(
                "timestampType is unix: expected integer milliseconds, got {}",
                json_kind(value)
            ),
        )),
        (_, Some(Form::Iso)) => Err(ParseError::new(
            field,
            format!(
                "timestampType is iso: expected a YYYY-MM-DD string, got {}",
                json_kind(value)
            ),
        )),
        (_, None) => Err(ParseError::new(
            field,
            format!("expected a day, got {}", json_kind(value)),
        )),
    }
}

fn from_millis(value: &Value, field: &str) -> Result<DateTime<Utc>, ParseError> {
    let ms = value.as_i64().ok_or_else(|| {
        ParseError::new(
            field,
            format!("{value} is not an integer number of milliseconds"),
        )
    })?;
    if !(MIN_MS..=MAX_MS).contains(&ms) {
        return Err(ParseError::new(
            field,
            format!("{ms} ms is outside 1970-01-01..9999-12-31"),
        ));
    }
    Ok(Utc
        .timestamp_millis_opt(ms)
        .single()
        .expect("milliseconds within 1970..9999 are a valid instant"))
}

fn parse_iso_instant(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // Thryve's doc promises UTC; a timestamp without an offset is read as UTC.
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc())
}

fn in_range(t: DateTime<Utc>, field: &str) -> Result<DateTime<Utc>, ParseError> {
    let ms = t.timestamp_millis();
    if (MIN_MS..=MAX_MS).contains(&ms) {
        Ok(t)
    } else {
        Err(ParseError::new(
            field,
            format!("{t} is outside 1970-01-01..9999-12-31"),
        ))
    }
}

pub(super) fn positive_i32(value: Option<&Value>, field: &str) -> Result<i32, ParseError> {
    let value = value.ok_or_else(|| ParseError::new(field, "missing"))?;
    value
        .as_i64()
        .filter(|n| (1..=i64::from(i32::MAX)).contains(n))
        .map(|n| n as i32)
        .ok_or_else(|| {
            ParseError::new(
                field,
                format!("expected a positive 32-bit integer, got {}", short(value)),
            )
        })
}

/// Most data types one notification may name; Thryve defines a few hundred.
const MAX_DATA_TYPES: usize = 10_000;

pub(super) fn type_ids(value: Option<&Value>, field: &str) -> Result<Vec<i32>, ParseError> {
    let items = match value {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ParseError::new(
                field,
                format!("expected an array of integers, got {}", json_kind(other)),
            ))
        }
        None => return Err(ParseError::new(field, "missing")),
    };
    if items.is_empty() {
        return Err(ParseError::new(
            field,
            "is empty: a notification must name at least one data type",
        ));
    }
    if items.len() > MAX_DATA_TYPES {
        return Err(ParseError::new(
            field,
            format!(
                "{} entries, more than the {MAX_DATA_TYPES} accepted",
                items.len()
            ),
        ));
    }
    let mut ids = items
        .iter()
        .enumerate()
        .map(|(i, item)| positive_i32(Some(item), &format!("{field}[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// A JSON object, or an error naming `field`.
pub(super) fn object<'a>(
    value: &'a Value,
    field: &str,
) -> Result<&'a Map<String, Value>, ParseError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ParseError::new(
            field,
            format!("expected an object, got {}", json_kind(other)),
        )),
    }
}

/// A non-empty string: the ids that say whom a delivery is about.
pub(super) fn required_string(value: Option<&Value>, field: &str) -> Result<(), ParseError> {
    match value {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        Some(Value::String(_)) => Err(ParseError::new(field, "is empty")),
        Some(other) => Err(ParseError::new(
            field,
            format!("expected a string, got {}", json_kind(other)),
        )),
        None => Err(ParseError::new(field, "missing")),
    }
}

/// A string, null or absent.
pub(super) fn optional_string(value: Option<&Value>, field: &str) -> Result<(), ParseError> {
    match value {
        None | Some(Value::Null | Value::String(_)) => Ok(()),
        Some(other) => Err(ParseError::new(
            field,
            format!("expected a string, got {}", json_kind(other)),
        )),
    }
}

/// "a string", "an array", ...: the JSON type of a value, for error messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value for an error message, cut so a hostile payload cannot make the reason huge.
pub(super) fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= 64 {
        text
    } else {
        let cut = (0..=64)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}...", &text[..cut])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn unknown_and_missing_types_are_unknown() {
        assert!(
            matches!(parsed(json!({"type": "notification.measurement.x", "endUserId": "u"})),
            Parsed::Unknown { envelope } if envelope.end_user_id.as_deref() == Some("u"))
        );
        assert!(matches!(parsed(json!({})), Parsed::Unknown { .. }));
    }
}
