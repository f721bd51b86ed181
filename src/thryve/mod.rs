//! Thryve's webhook payloads: JSON in, a typed notification or a typed reason out. Pure: no I/O, no clock.

mod canonical;
mod effects;
mod notification;

pub use canonical::{canonical_json, fingerprint};
pub use effects::{ConnectionChange, DailyValue, Effects, EpochValue, Span};
pub use notification::{
    json_kind, parse, DaySpan, Envelope, Event, InstantSpan, Notification, ParseError, Parsed,
};
