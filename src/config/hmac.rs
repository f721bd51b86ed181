//! The HMAC settings' types: which bytes are signed and how the timestamp joins them
//! (`WEBHOOK_HMAC_LAYOUT`), and what a failed check gets (`WEBHOOK_HMAC_MODE`). The check
//! itself, built from them, is `http::hmac`.

use std::{fmt, str::FromStr};

/// Which form of the body is signed. Thryve does not publish it: for a data push the wire
/// body is base64 text of a zstd frame, and any of the three forms is a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signed {
    /// The body exactly as received (`body` in the names of earlier versions).
    Wire,
    /// The compressed frame: the wire body after undoing base64 (the same bytes when the body
    /// did not come as base64).
    Frame,
    /// The content after every coding is undone: the JSON.
    Json,
}

/// How the signed bytes and the `x-hmac-timestamp` text are joined into the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Join {
    BodyTimestamp,
    TimestampBody,
    Body,
    BodyDotTimestamp,
    TimestampDotBody,
    BodyNewlineTimestamp,
    TimestampNewlineBody,
}

impl Join {
    const ALL: [Join; 7] = [
        Join::BodyTimestamp,
        Join::TimestampBody,
        Join::Body,
        Join::BodyDotTimestamp,
        Join::TimestampDotBody,
        Join::BodyNewlineTimestamp,
        Join::TimestampNewlineBody,
    ];

    /// The separator, and whether the body comes first.
    pub fn parts(self) -> (&'static [u8], bool) {
        match self {
            Join::BodyTimestamp => (b"", true),
            Join::TimestampBody => (b"", false),
            Join::Body => (b"", true),
            Join::BodyDotTimestamp => (b".", true),
            Join::TimestampDotBody => (b".", false),
            Join::BodyNewlineTimestamp => (b"\n", true),
            Join::TimestampNewlineBody => (b"\n", false),
        }
    }
}

/// Which bytes are signed and how the timestamp joins them: a `WEBHOOK_HMAC_LAYOUT` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    pub signed: Signed,
    pub join: Join,
}

/// Every layout's name, by [`Signed`] then [`Join`]: the body's place in the message is named
/// after the form that is signed.
const NAMES: [[&str; 7]; 3] = [
    [
        "wire+timestamp",
        "timestamp+wire",
        "wire",
        "wire.timestamp",
        "timestamp.wire",
        "wire+lf+timestamp",
        "timestamp+lf+wire",
    ],
    [
        "frame+timestamp",
        "timestamp+frame",
        "frame",
        "frame.timestamp",
        "timestamp.frame",
        "frame+lf+timestamp",
        "timestamp+lf+frame",
    ],
    [
        "json+timestamp",
        "timestamp+json",
        "json",
        "json.timestamp",
        "timestamp.json",
        "json+lf+timestamp",
        "timestamp+lf+json",
    ],
];

impl Layout {
    /// Every candidate layout, in the order they are listed and preferred.
    pub const ALL: [Layout; 21] = {
        let signed = [Signed::Wire, Signed::Frame, Signed::Json];
        let mut all = [Layout {
            signed: Signed::Wire,
            join: Join::BodyTimestamp,
        }; 21];
        let mut i = 0;
        while i < 21 {
            all[i] = Layout {
                signed: signed[i / 7],
                join: Join::ALL[i % 7],
            };
            i += 1;
        }
        all
    };

    /// The default, and what every earlier version checked: wire body then timestamp.
    pub const WIRE_THEN_TIMESTAMP: Layout = Layout {
        signed: Signed::Wire,
        join: Join::BodyTimestamp,
    };

    pub const fn new(signed: Signed, join: Join) -> Self {
        Layout { signed, join }
    }

    /// Its position in [`Layout::ALL`].
    pub fn index(self) -> usize {
        let join = Join::ALL.iter().position(|j| *j == self.join).unwrap_or(0);
        self.signed as usize * 7 + join
    }

    /// The name used in `WEBHOOK_HMAC_LAYOUT`, metrics and logs.
    pub fn as_str(self) -> &'static str {
        NAMES[self.signed as usize][self.index() % 7]
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Layout {
    type Err = String;

    /// A layout's name; the names of earlier versions, which said `body` for the wire
    /// body, still work (`body+timestamp` is `wire+timestamp`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let name = name.trim().to_ascii_lowercase();
        let wire_spelling = name.replace("body", "wire");
        Layout::ALL
            .into_iter()
            .find(|l| l.as_str() == name || l.as_str() == wire_spelling)
            .ok_or_else(|| {
                format!(
                    "{name:?} is no layout; one of auto, {} (body = wire, as in earlier versions)",
                    Layout::ALL.map(Layout::as_str).join(", ")
                )
            })
    }
}

/// `WEBHOOK_HMAC_LAYOUT`: one layout, or `auto` to accept what real deliveries show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutSetting {
    Fixed(Layout),
    /// Every layout is a candidate until signed deliveries narrow them down (see
    /// `HmacVerifier::check` in `http::hmac`).
    Auto,
}

impl FromStr for LayoutSetting {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if name.trim().eq_ignore_ascii_case("auto") {
            Ok(LayoutSetting::Auto)
        } else {
            name.parse().map(LayoutSetting::Fixed)
        }
    }
}

impl fmt::Display for LayoutSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutSetting::Fixed(layout) => layout.fmt(f),
            LayoutSetting::Auto => f.write_str("auto"),
        }
    }
}

/// `WEBHOOK_HMAC_MODE`: what a delivery whose signature fails gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HmacMode {
    /// 401, nothing stored.
    Enforce,
    /// Stored all the same; the result is counted and logged. For switching signatures on
    /// without risking the feed, and for finding the layout.
    Report,
}

impl HmacMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HmacMode::Enforce => "enforce",
            HmacMode::Report => "report",
        }
    }
}
