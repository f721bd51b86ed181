//! Answers of Thryve's API read into the bridge's types: the data API's values
//! (`/v5/dynamicEpochValues`, `/v5/dailyDynamicValues`) into the same value types data pushes
//! give, so fetched and pushed values are the same rows, with the type names the answers
//! carry; and a user's connected sources (`/v5/userInformation`).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{
    event::{DailyValue, EpochValue, ParseError},
    fields::{day, instant, json_kind, object, positive_i32, short, type_id},
    push::{annotations, is_null, value_text},
};

/// What one data-API answer holds: its values, and the name and value type it gave each data
/// type (`dynamicValueTypeName` / `dailyDynamicValueTypeName`, `valueType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<V> {
    pub values: Vec<V>,
    /// One entry per data type that came with a name, in first-seen order.
    pub types: Vec<TypeName>,
}

/// A data type as a data-API answer names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeName {
    pub data_type_id: i32,
    pub name: String,
    pub value_type: Option<String>,
}

/// Longest type name or value type kept; a longer one is left out (the values are kept).
const MAX_NAME_BYTES: usize = 256;

/// Reads an epoch answer: a JSON array of `{authenticationToken, partnerUserID, dataSources:
/// [{dataSource, data: [...]}]}`. Each item's start is `startTimestamp` (ISO, or a number of
/// milliseconds) or `startTimestampUnix`; its end likewise, where a missing end, `null` or
/// the string `"null"` means an instant. The type is `dynamicValueType` (named by
/// `dynamicValueTypeName`), the annotations `details` (with `timezoneOffset` in minutes).
///
/// ```
/// let answer = br#"[{"authenticationToken":"u","dataSources":[{"dataSource":8,"data":[
///     {"startTimestamp":"2025-12-01T08:00:00Z","endTimestamp":"null","dynamicValueType":3000,
///      "dynamicValueTypeName":"HeartRate","value":"61","valueType":"LONG",
///      "details":{"timezoneOffset":60,"generation":"tracker"}}]}]}]"#;
/// let answer = thryve_bridge::thryve::api::epoch_values(answer).unwrap();
/// let v = &answer.values[0];
/// assert_eq!((v.data_source_id, v.end, v.timezone_offset), (8, None, Some(60)));
/// assert_eq!(v.details.generation.as_deref(), Some("tracker"));
/// assert_eq!(answer.types[0].name, "HeartRate");
/// ```
pub fn epoch_values(answer: &[u8]) -> Result<Answer<EpochValue>, ParseError> {
    per_item(answer, "dynamicValueTypeName", |item, data_source_id| {
        let start = either(item, "startTimestamp")?
            .ok_or_else(|| ParseError::new("startTimestamp", "missing"))?;
        let end = either(item, "endTimestamp")?;
        if let Some(end) = end.filter(|end| *end < start) {
            return Err(ParseError::new(
                "startTimestamp",
                format!("{start} is after endTimestamp {end}"),
            ));
        }
        let (timezone_offset, details) = annotations(item, "details")?;
        let data_type_id = type_id(item.get("dynamicValueType"), "dynamicValueType")?;
        Ok((
            data_type_id,
            EpochValue {
                data_source_id,
                data_type_id,
                start,
                end,
                timezone_offset,
                value: value_text(item.get("value"))?,
                details,
            },
        ))
    })
}

/// Reads a daily answer, shaped like [`epoch_values`]'s; each item's `day` is `YYYY-MM-DD` (or
/// milliseconds of its midnight UTC, also as `dayUnix`), its type `dailyDynamicValueType`
/// (named by `dailyDynamicValueTypeName`).
///
/// ```
/// let answer = br#"[{"authenticationToken":"u","dataSources":[{"dataSource":1,"data":[
///     {"day":"2025-12-01","dailyDynamicValueType":1000,"value":"4200","valueType":"LONG"}]}]}]"#;
/// let answer = thryve_bridge::thryve::api::daily_values(answer).unwrap();
/// assert_eq!(answer.values[0].day.to_string(), "2025-12-01");
/// ```
pub fn daily_values(answer: &[u8]) -> Result<Answer<DailyValue>, ParseError> {
    per_item(
        answer,
        "dailyDynamicValueTypeName",
        |item, data_source_id| {
            let day = match (item.get("day"), item.get("dayUnix")) {
                (Some(v), _) if !is_null(v) => day(Some(v), "day", None)?,
                (_, Some(v)) if !is_null(v) => day(Some(v), "dayUnix", None)?,
                _ => return Err(ParseError::new("day", "missing")),
            };
            let (timezone_offset, details) = annotations(item, "details")?;
            let data_type_id = type_id(item.get("dailyDynamicValueType"), "dailyDynamicValueType")?;
            Ok((
                data_type_id,
                DailyValue {
                    data_source_id,
                    data_type_id,
                    day,
                    timezone_offset,
                    value: value_text(item.get("value"))?,
                    details,
                },
            ))
        },
    )
}

/// An answer's JSON.
fn json(answer: &[u8]) -> Result<Value, ParseError> {
    serde_json::from_slice(answer).map_err(|e| ParseError::new("", format!("not JSON: {e}")))
}

/// The users of an answer: a JSON array of user objects.
fn users(answer: Value) -> Result<Vec<Value>, ParseError> {
    match answer {
        Value::Array(users) => Ok(users),
        other => Err(ParseError::new(
            "",
            format!("expected an array of users, got {}", json_kind(&other)),
        )),
    }
}

/// Walks `[i].dataSources[j].data[k]`, reading each item with `read` into its type id and
/// value; errors name the path. Collects each type's name from the item's `name_field`.
fn per_item<T>(
    answer: &[u8],
    name_field: &str,
    mut read: impl FnMut(&Map<String, Value>, i32) -> Result<(i32, T), ParseError>,
) -> Result<Answer<T>, ParseError> {
    let users = users(json(answer)?)?;
    let mut values = Vec::new();
    let mut types: Vec<TypeName> = Vec::new();
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
                let item = object(item, &at)?;
                let (data_type_id, value) =
                    read(item, data_source_id).map_err(|e| e.within(&at))?;
                values.push(value);
                if types.iter().any(|t| t.data_type_id == data_type_id) {
                    continue;
                }
                let text = |field: &str| {
                    item.get(field)
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty() && s.len() <= MAX_NAME_BYTES)
                        .map(str::to_owned)
                };
                if let Some(name) = text(name_field) {
                    types.push(TypeName {
                        data_type_id,
                        name,
                        value_type: text("valueType"),
                    });
                }
            }
        }
    }
    Ok(Answer { values, types })
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

/// Reads a `/v5/userInformation` answer for `user`: the data sources in its
/// `connectedSources`. The answer is an array of user objects (or one); the entry whose
/// `authenticationToken` is `user` counts, or the only entry when it names nobody. Each
/// connected source is an object naming its id in `dataSource` (as the data API does) or
/// `dataSourceId` (as webhooks do), or the bare id. A missing `connectedSources` is an error,
/// never "nothing connected": reading it so would disconnect every source of the user.
///
/// ```
/// let answer = br#"[{"authenticationToken":"u","partnerUserID":"p","connectedSources":[
///     {"dataSource":8,"connectedAt":"2025-11-02T10:00:00Z"},{"dataSource":1}]}]"#;
/// assert_eq!(thryve_bridge::thryve::api::connected_sources(answer, "u").unwrap(), vec![1, 8]);
/// ```
pub fn connected_sources(answer: &[u8], user: &str) -> Result<Vec<i32>, ParseError> {
    let users = match json(answer)? {
        one @ Value::Object(_) => vec![one],
        other => users(other)?,
    };
    let named = |u: &Value| u.get("authenticationToken").and_then(Value::as_str) == Some(user);
    let unnamed = |u: &Value| u.get("authenticationToken").is_none_or(Value::is_null);
    let (i, entry) = match users.iter().position(named) {
        Some(i) => (i, &users[i]),
        None if users.len() == 1 && unnamed(&users[0]) => (0, &users[0]),
        None => {
            return Err(ParseError::new(
                "",
                format!(
                    "no entry with authenticationToken {} among {} users",
                    short(&Value::String(user.to_owned())),
                    users.len()
                ),
            ))
        }
    };
    let at = format!("[{i}]");
    let entry = object(entry, &at)?;
    let sources = match entry.get("connectedSources") {
        Some(Value::Array(sources)) => sources,
        Some(other) => {
            return Err(ParseError::new(
                format!("{at}.connectedSources"),
                format!("expected an array, got {}", json_kind(other)),
            ))
        }
        None => return Err(ParseError::new(format!("{at}.connectedSources"), "missing")),
    };
    let mut ids = sources
        .iter()
        .enumerate()
        .map(|(j, source)| {
            let at = format!("{at}.connectedSources[{j}]");
            match source {
                Value::Object(source) => {
                    let (field, id) = match source.get("dataSource") {
                        Some(id) => ("dataSource", id),
                        None => (
                            "dataSourceId",
                            source.get("dataSourceId").unwrap_or(&Value::Null),
                        ),
                    };
                    positive_i32(Some(&source_id(id)), field).map_err(|e| e.within(&at))
                }
                id => positive_i32(Some(&source_id(id)), &at),
            }
        })
        .collect::<Result<Vec<i32>, _>>()?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// A data-source id written as a numeric string (as the legacy format does) read as its number.
fn source_id(id: &Value) -> Value {
    match id.as_str().and_then(|s| s.parse::<i64>().ok()) {
        Some(n) => Value::from(n),
        None => id.clone(),
    }
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
        let values = epoch_values(answer).unwrap().values;
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
        let values = daily_values(answer).unwrap().values;
        assert_eq!(values[0].day.to_string(), "2025-12-01");
        assert_eq!(values[0].timezone_offset, Some(-300));
        assert_eq!(values[1].day.to_string(), "2025-12-02");
    }

    #[test]
    fn an_empty_answer_has_no_values() {
        assert!(epoch_values(b"[]").unwrap().values.is_empty());
        assert!(
            daily_values(br#"[{"authenticationToken":"u","dataSources":[]}]"#)
                .unwrap()
                .values
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

    #[test]
    fn annotations_and_type_names_come_with_the_values() {
        let answer = br#"[{"authenticationToken":"u","dataSources":[{"dataSource":8,"data":[
            {"startTimestampUnix":1000,"dynamicValueType":3000,"dynamicValueTypeName":"HeartRate","valueType":"LONG","value":"61",
             "details":{"timezoneOffset":60,"generation":"tracker","trustworthiness":"verified_from_device_source","medicalGrade":false}},
            {"startTimestampUnix":1000,"dynamicValueType":3000,"dynamicValueTypeName":"HeartRate","value":"64",
             "details":{"timezoneOffset":60,"generation":"manual_entry"}},
            {"startTimestampUnix":2000,"dynamicValueType":0,"value":"0","details":{"timezoneOffset":60}}]}]}]"#;
        let answer = epoch_values(answer).unwrap();
        let got: Vec<_> = answer
            .values
            .iter()
            .map(|v| {
                (
                    v.data_type_id,
                    v.timezone_offset,
                    v.details.generation.as_deref(),
                    v.details.annotations.as_ref().map(|a| a.len()),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (3000, Some(60), Some("tracker"), Some(3)),
                (3000, Some(60), Some("manual_entry"), Some(1)),
                // Only the offset: no annotations left to keep.
                (0, Some(60), None, None),
            ]
        );
        assert_eq!(
            answer.types,
            vec![TypeName {
                data_type_id: 3000,
                name: "HeartRate".into(),
                value_type: Some("LONG".into())
            }]
        );
    }

    #[test]
    fn connected_sources_in_each_spelling() {
        let answer = br#"[{"authenticationToken":"other","connectedSources":[{"dataSource":2}]},
            {"authenticationToken":"u","connectedSources":[{"dataSource":8},{"dataSourceId":"1"},5,{"dataSource":8}]}]"#;
        assert_eq!(connected_sources(answer, "u").unwrap(), vec![1, 5, 8]);
        assert_eq!(
            connected_sources(br#"{"connectedSources":[]}"#, "u").unwrap(),
            Vec::<i32>::new()
        );
        let e = connected_sources(br#"[{"authenticationToken":"u"}]"#, "u").unwrap_err();
        assert_eq!(e.to_string(), "[0].connectedSources: missing");
        let e =
            connected_sources(br#"[{"connectedSources":[{"connectedAt":"x"}]}]"#, "u").unwrap_err();
        assert_eq!(e.field, "[0].connectedSources[0].dataSourceId");
        assert!(connected_sources(br#"[{},{}]"#, "u").is_err());
        // Another user's sources are never taken for this one's.
        assert!(connected_sources(
            br#"[{"authenticationToken":"v","connectedSources":[{"dataSource":8}]}]"#,
            "u"
        )
        .is_err());
    }
}
