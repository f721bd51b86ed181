//! Thryve's webhook payloads: JSON in, a typed notification or a typed reason out. Pure: no I/O, no clock.

pub mod api;
mod canonical;
mod effects;
mod legacy;
mod notification;
mod push;

pub use canonical::{canonical_json, canonical_object, fingerprint};
pub use effects::{ConnectionChange, DailyValue, Effects, EpochValue, Span};
pub use legacy::LEGACY_EVENT_TYPE;
pub use notification::{
    json_kind, parse, DaySpan, Envelope, Event, InstantSpan, Notification, ParseError, Parsed,
    MAX_DISTINCT_DATA_TYPES, MAX_ID_BYTES,
};
pub use push::{SourceDailyValues, SourceEpochValues, MAX_DATA_POINTS};
