//! Answers of Thryve's data API (`/v5/dynamicEpochValues`, `/v5/dailyDynamicValues`) read
//! into the same value types data pushes give, so fetched and pushed values are the same rows.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{
    event::{DailyValue, EpochValue, ParseError},
    fields::{day, instant, json_kind, object, positive_i32, short},
    push::value_text,
};

/// Reads an epoch answer: a JSON array of `{authenticationToken, partnerUserID, dataSources:
/// [{dataSource, data: [...]}]}`. Each item's start is `startTimestamp` (ISO, or a number of
/// milliseconds) or `startTimestampUnix`; its end likewise, where a missing end, `null` or
/// the string `"null"` means an instant. The type is `dynamicValueType`, the offset
/// `details.timezoneOffset` (minutes).
///
/// ```
/// let answer = br#"[{"authenticationToken":"u","dataSources":[{"dataSource":8,"data":[
///     {"startTimestamp":"2025-12-01T08:00:00Z","endTimestamp":"null","dynamicValueType":3000,
///      "value":"61","valueType":"LONG","details":{"timezoneOffset":60}}]}]}]"#;
/// let values = thryve_bridge::thryve::api::epoch_values(answer).unwrap();
/// assert_eq!((values[0].data_source_id, values[0].end, values[0].timezone_offset), (8, None, Some(60)));
/// ```
pub fn epoch_values(answer: &[u8]) -> Result<Vec<EpochValue>, ParseError> {
    per_item(answer, |item, data_source_id| {
        let start = either(item, "startTimestamp")?
            .ok_or_else(|| ParseError::new("startTimestamp", "missing"))?;
        let end = either(item, "endTimestamp")?;
        if let Some(end) = end.filter(|end| *end < start) {
            return Err(ParseError::new(
                "startTimestamp",
                format!("{start} is after endTimestamp {end}"),
            ));
        }
        Ok(EpochValue {
            data_source_id,
            data_type_id: positive_i32(item.get("dynamicValueType"), "dynamicValueType")?,
            start,
            end,
            timezone_offset: timezone_offset(item)?,
            value: value_text(item.get("value"))?,
        })
    })
}

/// Reads a daily answer, shaped like [`epoch_values`]'s; each item's `day` is `YYYY-MM-DD` (or
/// milliseconds of its midnight UTC, also as `dayUnix`), its type `dailyDynamicValueType`.
///
/// ```
/// let answer = br#"[{"authenticationToken":"u","dataSources":[{"dataSource":1,"data":[
///     {"day":"2025-12-01","dailyDynamicValueType":1000,"value":"4200","valueType":"LONG"}]}]}]"#;
/// let values = thryve_bridge::thryve::api::daily_values(answer).unwrap();
/// assert_eq!(values[0].day.to_string(), "2025-12-01");
/// ```
pub fn daily_values(answer: &[u8]) -> Result<Vec<DailyValue>, ParseError> {
    per_item(answer, |item, data_source_id| {
        let day = match (item.get("day"), item.get("dayUnix")) {
            (Some(v), _) if !is_null(v) => day(Some(v), "day", None)?,
            (_, Some(v)) if !is_null(v) => day(Some(v), "dayUnix", None)?,
            _ => return Err(ParseError::new("day", "missing")),
        };
        Ok(DailyValue {
            data_source_id,
            data_type_id: positive_i32(item.get("dailyDynamicValueType"), "dailyDynamicValueType")?,
            day,
            timezone_offset: timezone_offset(item)?,
            value: value_text(item.get("value"))?,
        })
    })
}

/// Walks `[i].dataSources[j].data[k]`, reading each item with `read`; errors name the path.
fn per_item<T>(
    answer: &[u8],
    mut read: impl FnMut(&Map<String, Value>, i32) -> Result<T, ParseError>,
) -> Result<Vec<T>, ParseError> {
    let answer: Value = serde_json::from_slice(answer)
        .map_err(|e| ParseError::new("", format!("not JSON: {e}")))?;
    let users = match &answer {
        Value::Array(users) => users,
        other => {
            return Err(ParseError::new(
                "",
                format!("expected an array of users, got {}", json_kind(other)),
            ))
        }
    };
    let mut values = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let user = object(user, &format!("[{i}]"))?;
        let sources = match user.get("dataSources") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(sources)) => sources,
            Some(other) => {
                return Err(ParseError::new(
                    format!("[{i}].dataSources"),
                    format!("expected an array, got {}", json_kind(other)),
                ))
            }
        };
        for (j, source) in sources.iter().enumerate() {
            let at = format!("[{i}].dataSources[{j}]");
            let source = object(source, &at)?;
            let data_source_id =
                positive_i32(source.get("dataSource"), "dataSource").map_err(|e| e.within(&at))?;
            let items = match source.get("data") {
                None | Some(Value::Null) => continue,
                Some(Value::Array(items)) => items,
                Some(other) => {
                    return Err(ParseError::new(
                        format!("{at}.data"),
                        format!("expected an array, got {}", json_kind(other)),
                    ))
                }
            };
            for (k, item) in items.iter().enumerate() {
                let at = format!("{at}.data[{k}]");
                values.push(read(object(item, &at)?, data_source_id).map_err(|e| e.within(&at))?);
            }
        }
    }
    Ok(values)
}

fn is_null(value: &Value) -> bool {
    matches!(value, Value::Null) || value.as_str() == Some("null")
}

/// `<field>` (ISO, or milliseconds) or else `<field>Unix` (milliseconds); `None` when neither
/// holds a time (missing, `null`, `"null"`). The ISO spelling wins, as it does in Thryve's API.
fn either(item: &Map<String, Value>, field: &str) -> Result<Option<DateTime<Utc>>, ParseError> {
    if let Some(v) = item.get(field).filter(|v| !is_null(v)) {
        return instant(Some(v), field, None).map(Some);
    }
    let unix = format!("{field}Unix");
    match item.get(&unix).filter(|v| !is_null(v)) {
        Some(v) => instant(Some(v), &unix, None).map(Some),
        None => Ok(None),
    }
}

/// `details.timezoneOffset` (with `detailed=true`), or a top-level `timezoneOffset`.
fn timezone_offset(item: &Map<String, Value>) -> Result<Option<i32>, ParseError> {
    let (field, value) = match item.get("details").and_then(|d| d.get("timezoneOffset")) {
        Some(v) => ("details.timezoneOffset", v),
        None => match item.get("timezoneOffset") {
            Some(v) => ("timezoneOffset", v),
            None => return Ok(None),
        },
    };
    if is_null(value) {
        return Ok(None);
    }
    value
        .as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            ParseError::new(
                field,
                format!("expected a 32-bit integer, got {}", short(value)),
            )
        })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    #[test]
    fn epoch_items_in_both_spellings_with_null_ends() {
        let answer = br#"[{"authenticationToken":"u","partnerUserID":"p","dataSources":[
            {"dataSource":8,"data":[
              {"startTimestamp":"1970-01-01T00:00:01Z","endTimestamp":"1970-01-01T00:00:02Z","createdAt":"1970-01-01T00:00:03Z",
               "dynamicValueType":3000,"value":"60","valueType":"LONG","details":{"timezoneOffset":120}},
              {"startTimestamp":"1970-01-01T00:00:05Z","endTimestamp":"null","dynamicValueType":1000,"value":"10"}]},
            {"dataSource":1,"data":[
              {"startTimestampUnix":7000,"endTimestampUnix":9000,"createdAtUnix":9500,"dynamicValueType":1200,"value":"run"},
              {"startTimestampUnix":10000,"endTimestampUnix":null,"dynamicValueType":3000,"value":1.5}]}]}]"#;
        let values = epoch_values(answer).unwrap();
        let got: Vec<_> = values
            .iter()
            .map(|v| {
                (
                    v.data_source_id,
                    v.data_type_id,
                    v.start,
                    v.end,
                    v.timezone_offset,
                    v.value.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (8, 3000, at(1000), Some(at(2000)), Some(120), "60"),
                (8, 1000, at(5000), None, None, "10"),
                (1, 1200, at(7000), Some(at(9000)), None, "run"),
                (1, 3000, at(10000), None, None, "1.5"),
            ]
        );
    }

    #[test]
    fn daily_items_in_both_spellings() {
        let answer = br#"[{"authenticationToken":"u","dataSources":[{"dataSource":1,"data":[
            {"day":"2025-12-01","dailyDynamicValueType":1000,"value":"4200","details":{"timezoneOffset":-300}},
            {"dayUnix":1764633600000,"dailyDynamicValueType":2000,"value":"420"}]}]}]"#;
        let values = daily_values(answer).unwrap();
        assert_eq!(values[0].day.to_string(), "2025-12-01");
        assert_eq!(values[0].timezone_offset, Some(-300));
        assert_eq!(values[1].day.to_string(), "2025-12-02");
    }

    #[test]
    fn an_empty_answer_has_no_values() {
        assert!(epoch_values(b"[]").unwrap().is_empty());
        assert!(
            daily_values(br#"[{"authenticationToken":"u","dataSources":[]}]"#)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bad_answers_name_the_problem() {
        assert!(epoch_values(b"[{")
            .unwrap_err()
            .problem
            .starts_with("not JSON"));
        assert!(epoch_values(b"{}")
            .unwrap_err()
            .problem
            .contains("array of users"));
        let e = epoch_values(
            br#"[{"dataSources":[{"dataSource":8,"data":[{"endTimestamp":"null","dynamicValueType":1,"value":"1"}]}]}]"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "[0].dataSources[0].data[0].startTimestamp");
        let e = daily_values(
            br#"[{"dataSources":[{"dataSource":8,"data":[{"day":"2025-12-01","value":"1"}]}]}]"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "[0].dataSources[0].data[0].dailyDynamicValueType");
    }
}
