//! JSON read into a [`Value`] as serde_json reads it, except that an object giving one key
//! twice, at any depth, is refused with the key's path: serde_json keeps the last, so two
//! readers of one body (a proxy, a signature check, a customer's own code) could see two
//! different deliveries.

use std::{cell::RefCell, fmt};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body did not read.
#[derive(Debug)]
pub enum ReadError {
    /// Not JSON (serde_json's own message).
    Json(serde_json::Error),
    /// An object gives this key twice: its path, as in quarantine reasons
    /// (`data[0].epochData[3].value`).
    Duplicate(String),
}

/// Reads `bytes` as one JSON value (whitespace around it allowed, nothing else).
pub fn from_slice(bytes: &[u8]) -> Result<Value, ReadError> {
    let trail = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let read = Strict { trail: &trail }
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    match (read, trail.into_inner()) {
        (Err(_), Some(segments)) => Err(ReadError::Duplicate(path(segments))),
        (Err(error), None) => Err(ReadError::Json(error)),
        (Ok(value), _) => Ok(value),
    }
}

/// One step of a path, collected innermost first while the error unwinds.
enum Segment {
    Key(String),
    Index(usize),
}

fn path(mut segments: Vec<Segment>) -> String {
    segments.reverse();
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
            }
            Segment::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
}

/// Set (with the duplicate key) when one is found; each enclosing level adds its segment.
type Trail = RefCell<Option<Vec<Segment>>>;

#[derive(Clone, Copy)]
struct Strict<'t> {
    trail: &'t Trail,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As serde_json: JSON text has no NaN or infinity, so this is never Null in practice.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return Ok(Value::Array(items)),
                Err(error) => {
                    if let Some(segments) = self.trail.borrow_mut().as_mut() {
                        segments.push(Segment::Index(items.len()));
                    }
                    return Err(error);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                *self.trail.borrow_mut() = Some(vec![Segment::Key(key)]);
                return Err(de::Error::custom("duplicate key"));
            }
            let value = match map.next_value_seed(self) {
                Ok(value) => value,
                Err(error) => {
                    if let Some(segments) = self.trail.borrow_mut().as_mut() {
                        segments.push(Segment::Key(key));
                    }
                    return Err(error);
                }
            };
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicate(text: &str) -> Option<String> {
        match from_slice(text.as_bytes()) {
            Err(ReadError::Duplicate(path)) => Some(path),
            _ => None,
        }
    }

    #[test]
    fn reads_what_serde_json_reads() {
        for text in [
            r#"{"a":[1,-2,3.5,1e300,"x",null,true,{"b":{}}],"c":18446744073709551615}"#,
            " [ ] ",
            r#""\ud83d\ude00""#,
            "0.1",
        ] {
            let strict = from_slice(text.as_bytes()).ok().unwrap();
            assert_eq!(
                strict,
                serde_json::from_str::<Value>(text).unwrap(),
                "{text}"
            );
        }
        for text in ["{", "[1,]", "1 2", r#"{"a":1e400}"#, ""] {
            assert!(
                matches!(from_slice(text.as_bytes()), Err(ReadError::Json(_))),
                "{text}"
            );
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        match from_slice(deep.as_bytes()) {
            Err(ReadError::Json(error)) => {
                assert!(error.to_string().contains("recursion limit"), "{error}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_given_twice_at_any_depth_is_named_by_its_path() {
        assert_eq!(duplicate(r#"{"a":1,"a":1}"#).as_deref(), Some("a"));
        assert_eq!(
            duplicate(r#"{"data":[{"x":1},{"epochData":[{},{"v":1,"w":2,"v":3}]}]}"#).as_deref(),
            Some("data[1].epochData[1].v")
        );
        assert_eq!(
            duplicate(r#"[[{"k":{},"k":[]}]]"#).as_deref(),
            Some("[0][0].k")
        );
        assert_eq!(duplicate(r#"{"a":{"b":1},"c":{"b":1}}"#), None);
    }
}
