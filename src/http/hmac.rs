//! Thryve's HMAC-SHA256 delivery signature: which bytes are signed, and checking it within a time window.

use std::fmt;

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use clap::{builder::PossibleValue, ValueEnum};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{ConfigError, Secret};

pub const SIGNATURE_HEADER: &str = "x-hmac-signature";
pub const TIMESTAMP_HEADER: &str = "x-hmac-timestamp";

/// Which bytes the signature covers. Thryve does not publish it; `hmac check` finds it from a
/// captured delivery. "body" is the raw body exactly as received (still compressed) and
/// "timestamp" the `x-hmac-timestamp` header's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    BodyTimestamp,
    TimestampBody,
    Body,
    BodyDotTimestamp,
    TimestampDotBody,
    BodyNewlineTimestamp,
    TimestampNewlineBody,
}

impl Layout {
    pub const ALL: [Layout; 7] = [
        Layout::BodyTimestamp,
        Layout::TimestampBody,
        Layout::Body,
        Layout::BodyDotTimestamp,
        Layout::TimestampDotBody,
        Layout::BodyNewlineTimestamp,
        Layout::TimestampNewlineBody,
    ];

    /// The name used in `WEBHOOK_HMAC_LAYOUT` and printed by `hmac check`.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::BodyTimestamp => "body+timestamp",
            Layout::TimestampBody => "timestamp+body",
            Layout::Body => "body",
            Layout::BodyDotTimestamp => "body.timestamp",
            Layout::TimestampDotBody => "timestamp.body",
            Layout::BodyNewlineTimestamp => "body+lf+timestamp",
            Layout::TimestampNewlineBody => "timestamp+lf+body",
        }
    }

    /// Feeds the signed message to `mac` piece by piece, so the body is never copied.
    fn feed(self, mac: &mut Hmac<Sha256>, body: &[u8], timestamp: &[u8]) {
        let (first, separator, second): (&[u8], &[u8], &[u8]) = match self {
            Layout::BodyTimestamp => (body, b"", timestamp),
            Layout::TimestampBody => (timestamp, b"", body),
            Layout::Body => (body, b"", b""),
            Layout::BodyDotTimestamp => (body, b".", timestamp),
            Layout::TimestampDotBody => (timestamp, b".", body),
            Layout::BodyNewlineTimestamp => (body, b"\n", timestamp),
            Layout::TimestampNewlineBody => (timestamp, b"\n", body),
        };
        mac.update(first);
        mac.update(separator);
        mac.update(second);
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ValueEnum for Layout {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.as_str()))
    }
}

/// Why a signed delivery was refused; every case is a 401 whose body says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HmacError {
    #[error("missing {0} header (WEBHOOK_HMAC_SECRET is set, so deliveries must be signed)")]
    MissingHeader(&'static str),
    #[error("{0} header sent more than once")]
    RepeatedHeader(&'static str),
    #[error("{SIGNATURE_HEADER} is not 64 hex characters (an HMAC-SHA256)")]
    BadHex,
    #[error("{TIMESTAMP_HEADER} is not epoch milliseconds")]
    BadTimestamp,
    #[error("{TIMESTAMP_HEADER} is {age_secs} s old, outside the {window_secs} s window")]
    Stale { age_secs: i64, window_secs: u64 },
    #[error(
        "{TIMESTAMP_HEADER} is {ahead_secs} s in the future, outside the {window_secs} s window"
    )]
    Future { ahead_secs: i64, window_secs: u64 },
    #[error("{SIGNATURE_HEADER} does not match the body and timestamp")]
    BadSignature,
}

/// Checks `x-hmac-signature` / `x-hmac-timestamp` against the secrets (one, or two while it
/// rotates) and a layout.
#[derive(Debug, Clone)]
pub struct HmacVerifier {
    secrets: Vec<Secret>,
    layout: Layout,
    window_secs: u64,
}

impl HmacVerifier {
    /// From `WEBHOOK_HMAC_SECRET` (several comma-separated while rotating: a signature by
    /// any of them is accepted), `WEBHOOK_HMAC_LAYOUT` and `WEBHOOK_HMAC_WINDOW_SECS`.
    pub fn new(secret: Secret, layout: Layout, window_secs: u64) -> Result<Self, ConfigError> {
        let secrets: Vec<Secret> = secret_list(secret.expose()).map(Secret::new).collect();
        if secrets.is_empty() {
            return Err(ConfigError::new(
                "WEBHOOK_HMAC_SECRET",
                "is empty; unset it, or set it to the secret shown in Thryve's dashboard",
            ));
        }
        if window_secs == 0 {
            return Err(ConfigError::new(
                "WEBHOOK_HMAC_WINDOW_SECS",
                "must be at least 1 (default 300)",
            ));
        }
        Ok(Self {
            secrets,
            layout,
            window_secs,
        })
    }

    /// For the start-up line.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Accepts a delivery whose signature covers `body` (raw, as received) and whose
    /// timestamp lies within the window around `now`. Pure: the caller supplies the clock.
    ///
    /// ```
    /// use thryve_bridge::{config::Secret, http::hmac::{sign, HmacVerifier, Layout}};
    /// let verifier = HmacVerifier::new(Secret::new("k"), Layout::BodyTimestamp, 300).unwrap();
    /// let now = chrono::Utc::now();
    /// let timestamp = now.timestamp_millis().to_string();
    /// let mut headers = axum::http::HeaderMap::new();
    /// headers.insert("x-hmac-timestamp", timestamp.parse().unwrap());
    /// let signature = sign(b"k", Layout::BodyTimestamp, b"{}", timestamp.as_bytes());
    /// headers.insert("x-hmac-signature", signature.parse().unwrap());
    /// assert_eq!(verifier.verify(&headers, b"{}", now), Ok(()));
    /// assert!(verifier.verify(&headers, b"{ }", now).is_err());
    /// ```
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), HmacError> {
        let signature = single(headers, SIGNATURE_HEADER)?;
        let timestamp = single(headers, TIMESTAMP_HEADER)?.as_bytes();
        let signature = decode_signature(signature.as_bytes())?;
        let sent_ms = std::str::from_utf8(timestamp)
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or(HmacError::BadTimestamp)?;
        let window_ms = i64::try_from(self.window_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        let age_ms = now.timestamp_millis().saturating_sub(sent_ms);
        if age_ms > window_ms {
            return Err(HmacError::Stale {
                age_secs: age_ms / 1000,
                window_secs: self.window_secs,
            });
        }
        if age_ms < -window_ms {
            return Err(HmacError::Future {
                ahead_secs: -(age_ms / 1000),
                window_secs: self.window_secs,
            });
        }
        // Every secret is tried, so the time taken does not say which one signed.
        let mut signed = false;
        for secret in &self.secrets {
            signed |= matches(
                secret.expose().as_bytes(),
                self.layout,
                body,
                timestamp,
                &signature,
            );
        }
        if signed {
            Ok(())
        } else {
            Err(HmacError::BadSignature)
        }
    }
}

/// The secrets of a `WEBHOOK_HMAC_SECRET` value: comma-separated, blanks around each ignored.
pub fn secret_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A signature header's one value: a second copy would leave it unclear which one counts.
fn single<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a HeaderValue, HmacError> {
    super::single_header(headers, name)
        .map_err(|_| HmacError::RepeatedHeader(name))?
        .ok_or(HmacError::MissingHeader(name))
}

/// The layouts under which `signature` is the HMAC of `body` and `timestamp`: how an operator
/// finds what Thryve signs from one captured delivery (`thryve-bridge hmac check`).
pub fn matching_layouts(
    secret: &[u8],
    body: &[u8],
    timestamp: &[u8],
    signature: &[u8],
) -> Vec<Layout> {
    Layout::ALL
        .into_iter()
        .filter(|layout| matches(secret, *layout, body, timestamp, signature))
        .collect()
}

/// Lower-case hex HMAC-SHA256 of the message `layout` makes of `body` and `timestamp`: what a
/// sender puts in `x-hmac-signature`.
pub fn sign(secret: &[u8], layout: Layout, body: &[u8], timestamp: &[u8]) -> String {
    let mut mac = keyed(secret);
    layout.feed(&mut mac, body, timestamp);
    hex::encode(mac.finalize().into_bytes())
}

/// The 32 bytes of a hex signature, either case.
pub fn decode_signature(hex_text: &[u8]) -> Result<[u8; 32], HmacError> {
    let mut out = [0; 32];
    hex::decode_to_slice(hex_text.trim_ascii(), &mut out).map_err(|_| HmacError::BadHex)?;
    Ok(out)
}

fn matches(secret: &[u8], layout: Layout, body: &[u8], timestamp: &[u8], signature: &[u8]) -> bool {
    let mut mac = keyed(secret);
    layout.feed(&mut mac, body, timestamp);
    signature_eq(mac, signature)
}

#[cfg(test)]
thread_local! {
    /// Calls of [`signature_eq`] on this thread, so a test can see that `verify` uses it.
    static COMPARISONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The one comparison of a computed and a presented signature. Constant-time: `verify_slice`
/// compares without stopping at the first differing byte.
fn signature_eq(mac: Hmac<Sha256>, signature: &[u8]) -> bool {
    #[cfg(test)]
    COMPARISONS.with(|n| n.set(n.get() + 1));
    mac.verify_slice(signature).is_ok()
}

fn keyed(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};
    use chrono::TimeZone;

    const SECRET: &str = "whsec-test";
    const NOW_MS: i64 = 1_765_635_343_541;

    fn now() -> DateTime<Utc> {
        Utc.timestamp_millis_opt(NOW_MS).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::try_from(*k).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    fn verifier(layout: Layout) -> HmacVerifier {
        HmacVerifier::new(Secret::new(SECRET), layout, 300).unwrap()
    }

    #[test]
    fn rfc_4231_test_case_2() {
        assert_eq!(
            sign(b"Jefe", Layout::Body, b"what do ya want for nothing?", b""),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn each_layout_signs_its_own_message() {
        let cases: [(Layout, &[u8]); 7] = [
            (Layout::BodyTimestamp, b"{}123"),
            (Layout::TimestampBody, b"123{}"),
            (Layout::Body, b"{}"),
            (Layout::BodyDotTimestamp, b"{}.123"),
            (Layout::TimestampDotBody, b"123.{}"),
            (Layout::BodyNewlineTimestamp, b"{}\n123"),
            (Layout::TimestampNewlineBody, b"123\n{}"),
        ];
        for (layout, message) in cases {
            assert_eq!(
                sign(b"k", layout, b"{}", b"123"),
                sign(b"k", Layout::Body, message, b""),
                "{layout}"
            );
        }
    }

    #[test]
    fn accepts_a_good_signature_in_either_hex_case_at_the_window_edges() {
        for layout in Layout::ALL {
            let v = verifier(layout);
            for offset_ms in [0, 300_000, -300_000] {
                let ts = (NOW_MS + offset_ms).to_string();
                let sig = sign(SECRET.as_bytes(), layout, b"body", ts.as_bytes());
                for sig in [sig.clone(), sig.to_ascii_uppercase()] {
                    let h = headers(&[(SIGNATURE_HEADER, &sig), (TIMESTAMP_HEADER, &ts)]);
                    assert_eq!(v.verify(&h, b"body", now()), Ok(()), "{layout} {offset_ms}");
                }
            }
        }
    }

    #[test]
    fn each_refusal_says_what_was_wrong() {
        let v = verifier(Layout::BodyTimestamp);
        let ts = NOW_MS.to_string();
        let good = sign(
            SECRET.as_bytes(),
            Layout::BodyTimestamp,
            b"body",
            ts.as_bytes(),
        );
        let stale = (NOW_MS - 300_001).to_string();
        let future = (NOW_MS + 3_600_000).to_string();
        let sign_at = |t: &str| {
            sign(
                SECRET.as_bytes(),
                Layout::BodyTimestamp,
                b"body",
                t.as_bytes(),
            )
        };
        let cases = [
            (
                headers(&[(TIMESTAMP_HEADER, &ts)]),
                HmacError::MissingHeader(SIGNATURE_HEADER),
            ),
            (
                headers(&[(SIGNATURE_HEADER, &good)]),
                HmacError::MissingHeader(TIMESTAMP_HEADER),
            ),
            (
                headers(&[(SIGNATURE_HEADER, "zz"), (TIMESTAMP_HEADER, &ts)]),
                HmacError::BadHex,
            ),
            (
                headers(&[(SIGNATURE_HEADER, &good[..62]), (TIMESTAMP_HEADER, &ts)]),
                HmacError::BadHex,
            ),
            (
                headers(&[
                    (SIGNATURE_HEADER, &good),
                    (TIMESTAMP_HEADER, "1765635343.541"),
                ]),
                HmacError::BadTimestamp,
            ),
            (
                headers(&[(SIGNATURE_HEADER, &good), (TIMESTAMP_HEADER, "-5")]),
                HmacError::BadTimestamp,
            ),
            (
                headers(&[
                    (SIGNATURE_HEADER, &sign_at(&stale)),
                    (TIMESTAMP_HEADER, &stale),
                ]),
                HmacError::Stale {
                    age_secs: 300,
                    window_secs: 300,
                },
            ),
            (
                headers(&[
                    (SIGNATURE_HEADER, &sign_at(&future)),
                    (TIMESTAMP_HEADER, &future),
                ]),
                HmacError::Future {
                    ahead_secs: 3600,
                    window_secs: 300,
                },
            ),
            (
                headers(&[
                    (SIGNATURE_HEADER, &good),
                    (TIMESTAMP_HEADER, &(NOW_MS + 1).to_string()),
                ]),
                HmacError::BadSignature,
            ),
        ];
        for (h, expected) in cases {
            assert_eq!(
                v.verify(&h, b"body", now()),
                Err(expected.clone()),
                "{expected}"
            );
        }
        let h = headers(&[(SIGNATURE_HEADER, &good), (TIMESTAMP_HEADER, &ts)]);
        assert_eq!(v.verify(&h, b"Body", now()), Err(HmacError::BadSignature));
        assert_eq!(
            verifier(Layout::TimestampBody).verify(&h, b"body", now()),
            Err(HmacError::BadSignature)
        );
    }

    #[test]
    fn a_repeated_signature_or_timestamp_header_is_refused() {
        let v = verifier(Layout::BodyTimestamp);
        let ts = NOW_MS.to_string();
        let good = sign(
            SECRET.as_bytes(),
            Layout::BodyTimestamp,
            b"body",
            ts.as_bytes(),
        );
        let mut h = headers(&[(SIGNATURE_HEADER, &good), (TIMESTAMP_HEADER, &ts)]);
        assert_eq!(v.verify(&h, b"body", now()), Ok(()));
        h.append(SIGNATURE_HEADER, HeaderValue::from_str(&good).unwrap());
        assert_eq!(
            v.verify(&h, b"body", now()),
            Err(HmacError::RepeatedHeader(SIGNATURE_HEADER))
        );
        let mut h = headers(&[(SIGNATURE_HEADER, &good), (TIMESTAMP_HEADER, &ts)]);
        h.append(TIMESTAMP_HEADER, HeaderValue::from_static("1"));
        assert_eq!(
            v.verify(&h, b"body", now()),
            Err(HmacError::RepeatedHeader(TIMESTAMP_HEADER))
        );
    }

    #[test]
    fn while_rotating_either_secret_signs_and_both_are_always_compared_in_constant_time() {
        let v =
            HmacVerifier::new(Secret::new("old-secret, new-secret"), Layout::Body, 300).unwrap();
        let ts = NOW_MS.to_string();
        for (key, accepted) in [
            ("old-secret", true),
            ("new-secret", true),
            ("new-secreT", false),
            ("old-secret, new-secret", false),
        ] {
            let sig = sign(key.as_bytes(), Layout::Body, b"body", b"");
            let h = headers(&[(SIGNATURE_HEADER, &sig), (TIMESTAMP_HEADER, &ts)]);
            COMPARISONS.with(|n| n.set(0));
            assert_eq!(v.verify(&h, b"body", now()).is_ok(), accepted, "{key}");
            assert_eq!(COMPARISONS.with(|n| n.get()), 2, "{key}");
        }
        let debug = format!("{v:?}");
        assert!(
            !debug.contains("old-secret") && !debug.contains("new-secret"),
            "{debug}"
        );
        let err = HmacVerifier::new(Secret::new(" , "), Layout::Body, 300).unwrap_err();
        assert!(err.to_string().starts_with("WEBHOOK_HMAC_SECRET"));
    }

    #[test]
    fn matching_layouts_finds_the_one_used() {
        let sig = sign(b"s", Layout::TimestampDotBody, b"zstd-bytes", b"42");
        let sig = decode_signature(sig.as_bytes()).unwrap();
        assert_eq!(
            matching_layouts(b"s", b"zstd-bytes", b"42", &sig),
            vec![Layout::TimestampDotBody]
        );
        assert!(matching_layouts(b"other", b"zstd-bytes", b"42", &sig).is_empty());
    }

    #[test]
    fn settings_are_checked_and_the_secret_never_printed() {
        let err = HmacVerifier::new(Secret::new(""), Layout::Body, 300).unwrap_err();
        assert!(err.to_string().starts_with("WEBHOOK_HMAC_SECRET"));
        let err = HmacVerifier::new(Secret::new("k"), Layout::Body, 0).unwrap_err();
        assert!(err.to_string().starts_with("WEBHOOK_HMAC_WINDOW_SECS"));
        let v = HmacVerifier::new(Secret::new("hunter2"), Layout::Body, 300).unwrap();
        assert!(!format!("{v:?}").contains("hunter2"));
    }

    #[test]
    fn layout_names_round_trip_through_clap() {
        for layout in Layout::ALL {
            assert_eq!(Layout::from_str(layout.as_str(), false), Ok(layout));
        }
    }
}
