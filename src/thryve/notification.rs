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
            format!("must be \"iso\" or \"unix\", got {}", short(other)),
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
        (Value::String(s), Some(Form::Iso) | None) => match parse_iso_instant(s) {
            Some(t) => in_range(t, field),
            None if year_outside_range(s) => Err(out_of_range(field, s)),
            None => Err(ParseError::new(
                field,
                format!("{} is not an ISO 8601 / RFC 3339 timestamp", short_str(s)),
            )),
        },
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
            let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                if year_outside_range(s) {
                    out_of_range(field, s)
                } else {
                    ParseError::new(field, format!("{} is not a YYYY-MM-DD date", short_str(s)))
                }
            })?;
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
            format!("{} is not an integer number of milliseconds", short(value)),
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

/// RFC 3339 first; then with a signed or five-digit year, which RFC 3339 cannot write (so
/// that such a year is reported as out of range, not as unreadable); then without an offset,
/// read as UTC (Thryve's doc promises UTC).
fn parse_iso_instant(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"]
        .iter()
        .find_map(|f| DateTime::parse_from_str(s, f).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .map(|t| t.and_utc())
        })
}

/// Whether `s` starts with a year no timestamp in range has: signed (`-0001`, `+10000`) or
/// of five digits or more. chrono cannot even hold years past about 262,000, so such a text
/// may not parse at all; it is still a date out of range, not garbage.
fn year_outside_range(s: &str) -> bool {
    let signed = s.starts_with(['+', '-']);
    let digits = s
        .trim_start_matches(['+', '-'])
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    digits >= 4 && (signed || digits > 4)
}

fn out_of_range(field: &str, s: &str) -> ParseError {
    ParseError::new(
        field,
        format!("{} is outside 1970-01-01..9999-12-31", short_str(s)),
    )
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

/// Most entries a `dataTypeIds` array may have, duplicates included: bounds the work done
/// before de-duplicating.
const MAX_DATA_TYPES: usize = 10_000;

/// Most distinct data types one notification (or one data source of a push) may name. Thryve
/// defines a few hundred; the cap keeps a dirty range from carrying a giant array.
pub const MAX_DISTINCT_DATA_TYPES: usize = 1_000;

/// Longest `endUserId`, `endUserAlias` and `type` (and their legacy spellings), in bytes.
/// Thryve's ids are 32 hex characters; these columns are indexed, and Postgres refuses an
/// index entry over about 2,700 bytes, which would turn a bad field into a 503 on every retry.
pub const MAX_ID_BYTES: usize = 1_024;

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
    if ids.len() > MAX_DISTINCT_DATA_TYPES {
        return Err(ParseError::new(
            field,
            format!(
                "{} distinct data types, more than the {MAX_DISTINCT_DATA_TYPES} accepted",
                ids.len()
            ),
        ));
    }
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

/// A string of at most [`MAX_ID_BYTES`], or `None`: what the envelope copies into columns.
pub(super) fn id_text(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .filter(|s| s.len() <= MAX_ID_BYTES)
        .map(str::to_owned)
}

fn too_long(field: &str, s: &str) -> ParseError {
    ParseError::new(
        field,
        format!("{} bytes, more than the {MAX_ID_BYTES} accepted", s.len()),
    )
}

/// A non-empty string of at most [`MAX_ID_BYTES`]: the ids that say whom a delivery is about.
pub(super) fn required_string(value: Option<&Value>, field: &str) -> Result<(), ParseError> {
    match value {
        Some(Value::String(s)) if s.len() > MAX_ID_BYTES => Err(too_long(field, s)),
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        Some(Value::String(_)) => Err(ParseError::new(field, "is empty")),
        Some(other) => Err(ParseError::new(
            field,
            format!("expected a string, got {}", json_kind(other)),
        )),
        None => Err(ParseError::new(field, "missing")),
    }
}

/// A string of at most [`MAX_ID_BYTES`], null or absent.
pub(super) fn optional_string(value: Option<&Value>, field: &str) -> Result<(), ParseError> {
    match value {
        Some(Value::String(s)) if s.len() > MAX_ID_BYTES => Err(too_long(field, s)),
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
    match value {
        Value::String(s) => short_str(s),
        Value::Array(_) | Value::Object(_) => cut(&value.to_string()),
        scalar => scalar.to_string(),
    }
}

/// A string quoted for an error message, cut like [`short`].
pub(super) fn short_str(s: &str) -> String {
    // Quoting a 1 MiB string to keep 64 bytes of it would be wasted work.
    let end = s.floor_char_boundary(64);
    let quoted = Value::String(s[..end].to_owned()).to_string();
    if end < s.len() {
        format!("{quoted}...")
    } else {
        quoted
    }
}

fn cut(text: &str) -> String {
    if text.len() <= 64 {
        text.to_owned()
    } else {
        format!("{}...", &text[..text.floor_char_boundary(64)])
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
