//! Thryve's webhook payloads: JSON in, a typed notification or a typed reason out. Pure: no I/O, no clock.

//!
//! `dispatch` reads a body's type and hands it to its reader (`push` for data pushes,
//! `legacy` for `sourceUpdate`, its own code for notifications); the readers share
//! `fields`; what they give is in `event`; `effects` turns it into what the database
//! must change; `api` reads the data API's answers into the same value types.

pub mod api;
mod canonical;
mod dispatch;
mod effects;
mod event;
mod fields;
mod legacy;
mod push;

pub use canonical::{canonical_json, canonical_object, fingerprint};
pub use dispatch::parse;
pub use effects::{Effects, Span};
pub use event::{
    ConnectionChange, DailyValue, DaySpan, Details, Envelope, EpochValue, Event, InstantSpan,
    Notification, ParseError, Parsed, SourceDailyValues, SourceEpochValues,
};
pub use fields::{json_kind, MAX_DISTINCT_DATA_TYPES, MAX_ID_BYTES};
pub use legacy::LEGACY_EVENT_TYPE;
pub use push::MAX_DATA_POINTS;
