//! Data-push webhooks (`event.data.*`): the values themselves, one `data` element per data
//! source (`data` is one element, as Thryve's v6 example has it, or an array of them, as real
//! traffic has it), each value with its annotations.

use serde_json::{Map, Value};

use super::{
    event::{DailyValue, Details, EpochValue, ParseError, SourceDailyValues, SourceEpochValues},
    fields::{
        day, instant, json_kind, object, positive_i32, short, type_id, Form,
        MAX_DISTINCT_DATA_TYPES, MAX_ID_BYTES,
    },
};

/// Most data points one push may carry, over all its data sources. The default 1 MiB body
/// limit allows about 10,000; the cap keeps a raised limit from turning one delivery into a
/// transaction that holds the poller for minutes.
pub const MAX_DATA_POINTS: usize = 100_000;

/// Where a push puts a value's annotations.
const ANNOTATIONS: &str = "additionalDetails";

pub(super) fn epoch(
    data: &Value,
    form: Option<Form>,
) -> Result<Vec<SourceEpochValues>, ParseError> {
    per_source(data, "epochData", |point, data_source_id| {
        let start = instant(point.get("startTimestamp"), "startTimestamp", form)?;
        let end = match point.get("endTimestamp") {
            None | Some(Value::Null) => None,
            end => Some(instant(end, "endTimestamp", form)?),
        };
        if let Some(end) = end.filter(|end| *end < start) {
            return Err(ParseError::new(
                "startTimestamp",
                format!("{start} is after endTimestamp {end}"),
            ));
        }
        let (timezone_offset, details) = annotations(point, ANNOTATIONS)?;
        Ok(EpochValue {
            data_source_id,
            data_type_id: type_id(point.get("dataTypeId"), "dataTypeId")?,
            start,
            end,
            timezone_offset,
            value: value_text(point.get("value"))?,
            details,
        })
    })
    .and_then(|sources| types_within_cap(sources, data, "epochData", |v| v.data_type_id))
    .map(|sources| {
        sources
            .into_iter()
            .map(
                |(data_source_id, data_source_name, values)| SourceEpochValues {
                    data_source_id,
                    data_source_name,
                    values,
                },
            )
            .collect()
    })
}

pub(super) fn daily(
    data: &Value,
    form: Option<Form>,
) -> Result<Vec<SourceDailyValues>, ParseError> {
    per_source(data, "dailyData", |point, data_source_id| {
        let (timezone_offset, details) = annotations(point, ANNOTATIONS)?;
        Ok(DailyValue {
            data_source_id,
            data_type_id: type_id(point.get("dataTypeId"), "dataTypeId")?,
            day: day(point.get("day"), "day", form)?,
            timezone_offset,
            value: value_text(point.get("value"))?,
            details,
        })
    })
    .and_then(|sources| types_within_cap(sources, data, "dailyData", |v| v.data_type_id))
    .map(|sources| {
        sources
            .into_iter()
            .map(
                |(data_source_id, data_source_name, values)| SourceDailyValues {
                    data_source_id,
                    data_source_name,
                    values,
                },
            )
            .collect()
    })
}

/// Walks the data-source elements of `data` (one object, or an array of them) and their
/// `<list>[j]`, reading each point with `read` (whose error fields are relative to the point)
/// and returning each element's data source, its name and its points. Errors name the path
/// as the body has it: `data.epochData[3]` for one element, `data[1].epochData[3]` in an array.
fn per_source<T>(
    data: &Value,
    list: &str,
    mut read: impl FnMut(&Map<String, Value>, i32) -> Result<T, ParseError>,
) -> Result<Vec<Sourced<T>>, ParseError> {
    let elements: Vec<(String, &Value)> = match data {
        Value::Array(elements) => elements
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("data[{i}]"), e))
            .collect(),
        Value::Object(_) => vec![("data".to_owned(), data)],
        other => {
            return Err(ParseError::new(
                "data",
                format!(
                    "expected a data-source element or an array of them, got {}",
                    json_kind(other)
                ),
            ))
        }
    };
    // Counted before anything is read, so an oversized push costs no parsing.
    let points: usize = elements
        .iter()
        .filter_map(|(_, e)| e.get(list).and_then(Value::as_array).map(Vec::len))
        .sum();
    if points > MAX_DATA_POINTS {
        return Err(ParseError::new(
            "data",
            format!("{points} data points, more than the {MAX_DATA_POINTS} accepted in one push"),
        ));
    }
    elements
        .iter()
        .map(|(at, element)| {
            let element = object(element, at)?;
            let data_source_id = positive_i32(element.get("dataSourceId"), "dataSourceId")
                .map_err(|e| e.within(at))?;
            let items = match element.get(list) {
                Some(Value::Array(items)) => items,
                Some(other) => {
                    return Err(ParseError::new(
                        format!("{at}.{list}"),
                        format!("expected an array, got {}", json_kind(other)),
                    ))
                }
                None => return Err(ParseError::new(format!("{at}.{list}"), "missing")),
            };
            let values = items
                .iter()
                .enumerate()
                .map(|(j, item)| {
                    let at = || format!("{at}.{list}[{j}]");
                    read(object(item, &at())?, data_source_id).map_err(|e| e.within(&at()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            // Only a name Thryve could have meant: a string, bounded like the ids.
            let name = match element.get("dataSourceName") {
                Some(Value::String(name)) if name.len() <= MAX_NAME_BYTES => Some(name.clone()),
                _ => None,
            };
            Ok((data_source_id, name, values))
        })
        .collect()
}

/// One `data` element: its data source, `dataSourceName`, and its points.
type Sourced<T> = (i32, Option<String>, Vec<T>);

/// Longest `dataSourceName` kept; a longer one is left out (the values are kept).
const MAX_NAME_BYTES: usize = 256;

/// Each data source's values become one span listing their types, so a source may name at
/// most [`MAX_DISTINCT_DATA_TYPES`], like a notification.
fn types_within_cap<T>(
    sources: Vec<Sourced<T>>,
    data: &Value,
    list: &str,
    type_of: impl Fn(&T) -> i32,
) -> Result<Vec<Sourced<T>>, ParseError> {
    for (i, (_, _, values)) in sources.iter().enumerate() {
        if values.len() <= MAX_DISTINCT_DATA_TYPES {
            continue;
        }
        let mut ids: Vec<i32> = values.iter().map(&type_of).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > MAX_DISTINCT_DATA_TYPES {
            let at = if data.is_array() {
                format!("data[{i}]")
            } else {
                "data".to_owned()
            };
            return Err(ParseError::new(
                format!("{at}.{list}"),
                format!(
                    "{} distinct dataTypeIds, more than the {MAX_DISTINCT_DATA_TYPES} accepted per data source",
                    ids.len()
                ),
            ));
        }
    }
    Ok(sources)
}

/// A value's timezone offset and annotations, from `item` and its annotations object under
/// `key` (`additionalDetails` in a push, `details` in a data-API answer). `timezoneOffset` is
/// read beside the object first, then inside it (Thryve's own example puts it beside);
/// `thirdPartyDataSourceId` likewise. A `null` or `"null"` is no value.
pub(super) fn annotations(
    item: &Map<String, Value>,
    key: &str,
) -> Result<(Option<i32>, Details), ParseError> {
    let mut inner = match item.get(key) {
        None => None,
        Some(v) if is_null(v) => None,
        Some(Value::Object(map)) => Some(map.clone()),
        Some(other) => {
            return Err(ParseError::new(
                key,
                format!("expected an object, got {}", json_kind(other)),
            ))
        }
    };
    let inside = |field: &str| inner.as_ref().and_then(|m| m.get(field));
    let beside_or_inside = |field: &'static str| match item.get(field).filter(|v| !is_null(v)) {
        Some(v) => Some((field.to_owned(), v)),
        None => inside(field)
            .filter(|v| !is_null(v))
            .map(|v| (format!("{key}.{field}"), v)),
    };
    let timezone_offset = beside_or_inside("timezoneOffset")
        .map(|(field, v)| {
            v.as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| {
                    ParseError::new(
                        field,
                        format!("expected a 32-bit integer, got {}", short(v)),
                    )
                })
        })
        .transpose()?;
    let third_party_data_source_id = beside_or_inside("thirdPartyDataSourceId")
        .map(|(field, v)| key_text(v, &field))
        .transpose()?;
    let generation = inside("generation")
        .filter(|v| !is_null(v))
        .map(|v| key_text(v, &format!("{key}.generation")))
        .transpose()?;
    if let Some(map) = inner.as_mut() {
        map.remove("timezoneOffset");
    }
    Ok((
        timezone_offset,
        Details {
            annotations: inner.filter(|m| !m.is_empty()),
            generation,
            third_party_data_source_id,
        },
    ))
}

/// A string or an integer as text, bounded like the ids: part of a value's key, which an
/// index holds.
fn key_text(value: &Value, field: &str) -> Result<String, ParseError> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        other => {
            return Err(ParseError::new(
                field,
                format!("expected a string or an integer, got {}", short(other)),
            ))
        }
    };
    if text.len() > MAX_ID_BYTES {
        return Err(ParseError::new(
            field,
            format!(
                "{} bytes, more than the {MAX_ID_BYTES} accepted",
                text.len()
            ),
        ));
    }
    Ok(text)
}

/// JSON `null`, or the string `"null"` that Thryve's data API writes for a missing end.
pub(super) fn is_null(value: &Value) -> bool {
    matches!(value, Value::Null) || value.as_str() == Some("null")
}

/// Thryve sends values as strings in real traffic and in its data API; its v6 documentation
/// writes a bare number, which means its text.
pub(super) fn value_text(value: Option<&Value>) -> Result<String, ParseError> {
    match value {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(ParseError::new(
            "value",
            format!("expected a string or a number, got {}", json_kind(other)),
        )),
        None => Err(ParseError::new("value", "missing")),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, NaiveDate, TimeZone, Utc};
    use serde_json::{json, Value};

    use super::super::{parse, Event, Notification, Parsed};
    use super::*;

    fn valid(body: &Value) -> Notification {
        match parse(body.as_object().expect("object")) {
            Parsed::Valid(n) => n,
            other => panic!("expected valid, got {other:?} for {body}"),
        }
    }

    fn reason(body: &Value) -> String {
        match parse(body.as_object().expect("object")) {
            Parsed::Invalid { error, .. } => error.to_string(),
            other => panic!("expected invalid, got {other:?} for {body}"),
        }
    }

    fn push(event_type: &str, form: &str, data: Value) -> Value {
        json!({"endUserId": "u", "endUserAlias": "a", "timestampType": form, "type": event_type, "data": data})
    }

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn epoch_pushes_in_both_timestamp_forms() {
        let unix = json!([{"dataSourceId": 8, "dataSourceName": "Nokia", "epochData": [
            {"startTimestamp": 1763083020000_i64, "endTimestamp": 1763084220000_i64, "timezoneOffset": 0, "dataTypeId": 2005, "value": "true"},
            {"startTimestamp": 1763009460000_i64, "endTimestamp": null, "timezoneOffset": -120, "dataTypeId": 1200, "value": 102},
            {"startTimestamp": 1763009460000_i64, "dataTypeId": 3000, "value": "61.5"}]}]);
        let iso = json!([{"dataSourceId": 8, "epochData": [
            {"startTimestamp": "2025-11-14T01:17:00Z", "endTimestamp": "2025-11-14T01:37:00Z", "timezoneOffset": 0, "dataTypeId": 2005, "value": "true"},
            {"startTimestamp": "2025-11-13T04:51:00Z", "endTimestamp": null, "timezoneOffset": -120, "dataTypeId": 1200, "value": 102},
            {"startTimestamp": "2025-11-13T04:51:00+00:00", "dataTypeId": 3000, "value": "61.5"}]}]);
        let expected = |name: Option<&str>| {
            Event::EpochPush(vec![SourceEpochValues {
                data_source_id: 8,
                data_source_name: name.map(str::to_owned),
                values: vec![
                    EpochValue {
                        data_source_id: 8,
                        data_type_id: 2005,
                        start: at(1763083020000),
                        end: Some(at(1763084220000)),
                        timezone_offset: Some(0),
                        value: "true".into(),
                        details: Details::default(),
                    },
                    EpochValue {
                        data_source_id: 8,
                        data_type_id: 1200,
                        start: at(1763009460000),
                        end: None,
                        timezone_offset: Some(-120),
                        value: "102".into(),
                        details: Details::default(),
                    },
                    EpochValue {
                        data_source_id: 8,
                        data_type_id: 3000,
                        start: at(1763009460000),
                        end: None,
                        timezone_offset: None,
                        value: "61.5".into(),
                        details: Details::default(),
                    },
                ],
            }])
        };
        for event_type in ["event.data.epoch.create", "event.data.epoch.update"] {
            // Only the unix body names its source.
            for (form, data, name) in [("unix", &unix, Some("Nokia")), ("iso", &iso, None)] {
                let n = valid(&push(event_type, form, data.clone()));
                assert_eq!(n.event_type, event_type);
                assert_eq!(
                    (n.end_user_id.as_str(), n.end_user_alias.as_deref()),
                    ("u", Some("a"))
                );
                assert_eq!(n.event, expected(name), "{event_type} {form}");
            }
        }
    }

    #[test]
    fn daily_pushes_in_both_timestamp_forms() {
        let unix = json!([
            {"dataSourceId": 8, "dailyData": [
                {"day": 1765584000000_i64, "timezoneOffset": 60, "dataTypeId": 3001, "value": "59"},
                {"day": 1765670400000_i64, "dataTypeId": 1000, "value": 4200}]},
            {"dataSourceId": 1, "dailyData": []}]);
        let iso = json!([
            {"dataSourceId": 8, "dailyData": [
                {"day": "2025-12-13", "timezoneOffset": 60, "dataTypeId": 3001, "value": "59"},
                {"day": "2025-12-14", "timezoneOffset": null, "dataTypeId": 1000, "value": 4200}]},
            {"dataSourceId": 1, "dailyData": []}]);
        let expected = Event::DailyPush(vec![
            SourceDailyValues {
                data_source_id: 8,
                data_source_name: None,
                values: vec![
                    DailyValue {
                        data_source_id: 8,
                        data_type_id: 3001,
                        day: ymd(2025, 12, 13),
                        timezone_offset: Some(60),
                        value: "59".into(),
                        details: Details::default(),
                    },
                    DailyValue {
                        data_source_id: 8,
                        data_type_id: 1000,
                        day: ymd(2025, 12, 14),
                        timezone_offset: None,
                        value: "4200".into(),
                        details: Details::default(),
                    },
                ],
            },
            SourceDailyValues {
                data_source_id: 1,
                data_source_name: None,
                values: vec![],
            },
        ]);
        for event_type in ["event.data.daily.create", "event.data.daily.update"] {
            for (form, data) in [("unix", &unix), ("iso", &iso)] {
                assert_eq!(
                    valid(&push(event_type, form, data.clone())).event,
                    expected,
                    "{event_type} {form}"
                );
            }
        }
    }

    #[test]
    fn thryves_v6_example_one_element_iso_in_capitals_a_numeric_value() {
        // The "Data push" page's body, item as on the "Data annotations" page.
        let body = json!({"endUserId": "123accessToken", "endUserAlias": "YourEndUserAlias",
            "timestampType": "ISO", "type": "event.data.epoch.create",
            "data": {"dataSourceId": 5, "dataSourceName": "Apple", "epochData": [
                {"startTimestamp": "2025-05-31T11:11:13+06:00", "endTimestamp": "2025-05-31T11:11:13+06:00",
                 "timezoneOffset": 240, "dataTypeId": 0, "value": 0, "additionalDetails": {}}]}});
        let at: DateTime<Utc> = "2025-05-31T05:11:13Z".parse().unwrap();
        assert_eq!(
            valid(&body).event,
            Event::EpochPush(vec![SourceEpochValues {
                data_source_id: 5,
                data_source_name: Some("Apple".into()),
                values: vec![EpochValue {
                    data_source_id: 5,
                    data_type_id: 0,
                    start: at,
                    end: Some(at),
                    timezone_offset: Some(240),
                    value: "0".into(),
                    details: Details::default(),
                }],
            }])
        );
    }

    #[test]
    fn annotations_are_kept_with_the_offset_read_beside_or_inside() {
        let item = |extra: Value| {
            let mut item = json!({"day": "2025-12-13", "dataTypeId": 1000, "value": "4200"});
            item.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            item
        };
        let body = push(
            "event.data.daily.create",
            "iso",
            json!({"dataSourceId": 1, "dailyData": [
                item(json!({"additionalDetails": {"timezoneOffset": 60, "generation": "manual_entry",
                    "trustworthiness": "doubt_from_user", "medicalGrade": false, "chronologicalExactness": 5}})),
                item(json!({"timezoneOffset": -300, "additionalDetails": {"timezoneOffset": 60, "generation": "tracker",
                    "thirdPartyDataSourceId": 77}})),
                item(json!({"timezoneOffset": 0})),
            ]}),
        );
        let Event::DailyPush(sources) = valid(&body).event else {
            panic!()
        };
        let got: Vec<_> = sources[0]
            .values
            .iter()
            .map(|v| {
                (
                    v.timezone_offset,
                    v.details.generation.as_deref(),
                    v.details.third_party_data_source_id.as_deref(),
                    v.details.annotations.clone().map(Value::Object),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Some(60),
                    Some("manual_entry"),
                    None,
                    Some(
                        json!({"generation": "manual_entry", "trustworthiness": "doubt_from_user",
                                "medicalGrade": false, "chronologicalExactness": 5})
                    )
                ),
                // Beside wins over inside; the offset leaves the annotations either way.
                (
                    Some(-300),
                    Some("tracker"),
                    Some("77"),
                    Some(json!({"generation": "tracker", "thirdPartyDataSourceId": 77}))
                ),
                (Some(0), None, None, None),
            ]
        );
    }

    #[test]
    fn a_data_source_may_name_at_most_the_capped_number_of_types() {
        let points = |types: i64| -> Vec<Value> {
            (0..2 * types)
                .map(|i| json!({"day": 1765584000000_i64, "dataTypeId": 1 + i % types, "value": "1"}))
                .collect()
        };
        let body = |types: i64| {
            push(
                "event.data.daily.update",
                "unix",
                json!([{"dataSourceId": 1, "dailyData": points(3)},
                       {"dataSourceId": 2, "dailyData": points(types)}]),
            )
        };
        valid(&body(MAX_DISTINCT_DATA_TYPES as i64));
        assert_eq!(
            reason(&body(MAX_DISTINCT_DATA_TYPES as i64 + 1)),
            "data[1].dailyData: 1001 distinct dataTypeIds, more than the 1000 accepted per data source"
        );
    }

    #[test]
    fn an_empty_push_is_valid_and_changes_nothing() {
        let n = valid(&push("event.data.epoch.update", "unix", json!([])));
        assert_eq!(n.event, Event::EpochPush(vec![]));
    }

    #[test]
    fn bad_fields_are_named_by_their_path() {
        let epoch = |point: Value| {
            push(
                "event.data.epoch.create",
                "unix",
                json!([{"dataSourceId": 8, "epochData": [
                    {"startTimestamp": 1, "dataTypeId": 1, "value": "ok"}, point]}]),
            )
        };
        let daily = |point: Value| {
            push(
                "event.data.daily.update",
                "iso",
                json!([{"dataSourceId": 8, "dailyData": [point]}]),
            )
        };
        let cases = [
            (
                push("event.data.epoch.create", "unix", json!(7)),
                "data: expected a data-source element or an array of them, got a number",
            ),
            (
                push("event.data.epoch.create", "unix", json!({"dataSourceId": 8})),
                "data.epochData: missing",
            ),
            (
                push(
                    "event.data.daily.create",
                    "unix",
                    json!({"dataSourceId": 8, "dailyData": [{"day": 1, "dataTypeId": 1, "value": "v", "additionalDetails": []}]}),
                ),
                "data.dailyData[0].additionalDetails: expected an object, got an array",
            ),
            (
                push("event.data.daily.create", "unix", json!([7])),
                "data[0]: expected an object, got a number",
            ),
            (
                push("event.data.epoch.update", "unix", json!([{"epochData": []}])),
                "data[0].dataSourceId: missing",
            ),
            (
                push("event.data.epoch.update", "unix", json!([{"dataSourceId": 8}])),
                "data[0].epochData: missing",
            ),
            (
                push(
                    "event.data.epoch.update",
                    "unix",
                    json!([{"dataSourceId": 8, "dailyData": []}]),
                ),
                "data[0].epochData: missing",
            ),
            (
                push(
                    "event.data.daily.update",
                    "unix",
                    json!([{"dataSourceId": 8, "dailyData": {}}]),
                ),
                "data[0].dailyData: expected an array, got an object",
            ),
            (epoch(json!("x")), "data[0].epochData[1]: expected an object"),
            (
                epoch(json!({"dataTypeId": 1, "value": "v"})),
                "data[0].epochData[1].startTimestamp: missing",
            ),
            (
                epoch(json!({"startTimestamp": "2025-01-01T00:00:00Z", "dataTypeId": 1, "value": "v"})),
                "data[0].epochData[1].startTimestamp: timestampType is unix",
            ),
            (
                epoch(json!({"startTimestamp": 5, "endTimestamp": 4, "dataTypeId": 1, "value": "v"})),
                "data[0].epochData[1].startTimestamp: 1970-01-01 00:00:00.005 UTC is after endTimestamp",
            ),
            (
                epoch(json!({"startTimestamp": 5, "endTimestamp": true, "dataTypeId": 1, "value": "v"})),
                "data[0].epochData[1].endTimestamp: timestampType is unix",
            ),
            (
                epoch(json!({"startTimestamp": 5, "dataTypeId": -1, "value": "v"})),
                "data[0].epochData[1].dataTypeId: expected a non-negative 32-bit integer",
            ),
            (
                epoch(json!({"startTimestamp": 5, "dataTypeId": 1, "value": "v", "additionalDetails": {"timezoneOffset": "+01:00"}})),
                "data[0].epochData[1].additionalDetails.timezoneOffset: expected a 32-bit integer",
            ),
            (
                epoch(json!({"startTimestamp": 5, "dataTypeId": 1, "value": "v", "additionalDetails": {"generation": ["tracker"]}})),
                "data[0].epochData[1].additionalDetails.generation: expected a string or an integer",
            ),
            (
                epoch(json!({"startTimestamp": 5, "dataTypeId": 1, "value": "v", "thirdPartyDataSourceId": "x".repeat(1025)})),
                "data[0].epochData[1].thirdPartyDataSourceId: 1025 bytes, more than the 1024 accepted",
            ),
            (
                epoch(json!({"startTimestamp": 5, "value": "v"})),
                "data[0].epochData[1].dataTypeId: missing",
            ),
            (
                epoch(json!({"startTimestamp": 5, "dataTypeId": 1})),
                "data[0].epochData[1].value: missing",
            ),
            (
                epoch(json!({"startTimestamp": 5, "dataTypeId": 1, "value": null})),
                "data[0].epochData[1].value: expected a string or a number, got null",
            ),
            (
                epoch(json!({"startTimestamp": 5, "dataTypeId": 1, "value": [1]})),
                "data[0].epochData[1].value: expected a string or a number, got an array",
            ),
            (
                epoch(json!({"startTimestamp": 5, "dataTypeId": 1, "value": "v", "timezoneOffset": "+01:00"})),
                "data[0].epochData[1].timezoneOffset: expected a 32-bit integer",
            ),
            (
                epoch(json!({"startTimestamp": 5, "dataTypeId": 1, "value": "v", "timezoneOffset": 4294967296_i64})),
                "data[0].epochData[1].timezoneOffset: expected a 32-bit integer",
            ),
            (
                daily(json!({"dataTypeId": 1, "value": "v"})),
                "data[0].dailyData[0].day: missing",
            ),
            (
                daily(json!({"day": "2025-13-01", "dataTypeId": 1, "value": "v"})),
                "data[0].dailyData[0].day: \"2025-13-01\" is not a YYYY-MM-DD date",
            ),
            (
                daily(json!({"day": 1765584000000_i64, "dataTypeId": 1, "value": "v"})),
                "data[0].dailyData[0].day: timestampType is iso",
            ),
            (
                json!({"timestampType": "unix", "type": "event.data.daily.update", "data": []}),
                "endUserId: missing",
            ),
            (
                json!({"endUserId": "u", "type": "event.data.daily.update"}),
                "data: missing",
            ),
        ];
        for (body, expected) in cases {
            let got = reason(&body);
            assert!(
                got.starts_with(expected),
                "{got:?} should start with {expected:?}"
            );
        }
    }

    #[test]
    fn a_push_over_the_cap_is_refused_before_it_is_read() {
        let points = vec![json!({}); MAX_DATA_POINTS / 2 + 1];
        let body = push(
            "event.data.daily.create",
            "unix",
            json!([{"dataSourceId": 1, "dailyData": points}, {"dataSourceId": 2, "dailyData": points}]),
        );
        assert_eq!(
            reason(&body),
            format!(
                "data: {} data points, more than the {MAX_DATA_POINTS} accepted in one push",
                MAX_DATA_POINTS + 2
            )
        );
    }
}
