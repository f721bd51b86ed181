//! Readers of single fields, shared by every body kind: timestamps and days in either form,
//! positive ids, data-type lists, bounded strings, and the short quoting of bad values in
//! error messages.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde_json::{Map, Value};

use super::event::ParseError;

/// How timestamps are written. `None` when the body does not say: each value is then read by
/// its JSON type (number = unix milliseconds, string = ISO 8601).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    Iso,
    Unix,
}

pub(super) fn timestamp_form(body: &Map<String, Value>) -> Result<Option<Form>, ParseError> {
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
        _ => Err(wrong_kind(
            value,
            field,
            form,
            "a timestamp string",
            "a timestamp",
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
        _ => Err(wrong_kind(
            value,
            field,
            form,
            "a YYYY-MM-DD string",
            "a day",
        )),
    }
}

/// A time field of the wrong JSON kind: what `form` asks for (`iso_wants` under `iso`),
/// or `what` where the body names no form.
fn wrong_kind(
    value: &Value,
    field: &str,
    form: Option<Form>,
    iso_wants: &str,
    what: &str,
) -> ParseError {
    let expected = match form {
        Some(Form::Unix) => "timestampType is unix: expected integer milliseconds".to_owned(),
        Some(Form::Iso) => format!("timestampType is iso: expected {iso_wants}"),
        None => format!("expected {what}"),
    };
    ParseError::new(field, format!("{expected}, got {}", json_kind(value)))
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

/// A value's `dataTypeId`: zero or more. Thryve's own data-push example names type 0.
pub(super) fn type_id(value: Option<&Value>, field: &str) -> Result<i32, ParseError> {
    let value = value.ok_or_else(|| ParseError::new(field, "missing"))?;
    value
        .as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            ParseError::new(
                field,
                format!(
                    "expected a non-negative 32-bit integer, got {}",
                    short(value)
                ),
            )
        })
}

/// Most entries a `dataTypeIds` array may have, duplicates included: bounds the work done
/// before de-duplicating.
pub(super) const MAX_DATA_TYPES: usize = 10_000;

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
    use serde_json::json;

    use super::*;

    #[test]
    fn a_time_field_of_the_wrong_kind_says_what_its_form_wants() {
        let problem = |e: ParseError| e.problem;
        let wrong = json!(true);
        let cases = [
            (
                Some(Form::Unix),
                "timestampType is unix: expected integer milliseconds, got a boolean",
                "timestampType is unix: expected integer milliseconds, got a boolean",
            ),
            (
                Some(Form::Iso),
                "timestampType is iso: expected a timestamp string, got a boolean",
                "timestampType is iso: expected a YYYY-MM-DD string, got a boolean",
            ),
            (
                None,
                "expected a timestamp, got a boolean",
                "expected a day, got a boolean",
            ),
        ];
        for (form, as_instant, as_day) in cases {
            assert_eq!(
                problem(instant(Some(&wrong), "f", form).unwrap_err()),
                as_instant
            );
            assert_eq!(problem(day(Some(&wrong), "f", form).unwrap_err()), as_day);
        }
    }
}
