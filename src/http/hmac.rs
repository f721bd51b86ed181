//! Thryve's HMAC-SHA256 delivery signature: which bytes are signed, checking it within a time
//! window, and finding the layout from real deliveries.

use std::sync::{
    atomic::{AtomicU32, Ordering},
    Arc,
};

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{self, ConfigError, ReceiverConfig, Secret};

pub const SIGNATURE_HEADER: &str = "x-hmac-signature";
pub const TIMESTAMP_HEADER: &str = "x-hmac-timestamp";

pub use crate::config::{
    hmac::{HmacMode, Join, Layout, LayoutSetting, Signed},
    secret_list,
};

/// Why a signature was refused; every case is a 401 whose body says which.
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

impl HmacError {
    /// The `result` label of the signature-check metric.
    pub fn metric_result(&self) -> &'static str {
        match self {
            HmacError::MissingHeader(_) => "missing",
            HmacError::RepeatedHeader(_) | HmacError::BadHex | HmacError::BadTimestamp => {
                "malformed"
            }
            HmacError::Stale { .. } | HmacError::Future { .. } => "outside_window",
            HmacError::BadSignature => "mismatched",
        }
    }
}

/// The forms of one delivery's body a signature may cover. `frame` and `json` are `None`
/// when the body could not be decoded: layouts over them then cannot match.
#[derive(Debug, Clone, Copy)]
pub struct Forms<'a> {
    pub wire: &'a [u8],
    pub frame: Option<&'a [u8]>,
    pub json: Option<&'a [u8]>,
}

impl<'a> Forms<'a> {
    /// A body that came as it is (no coding, no base64): every form is the same bytes.
    pub fn plain(body: &'a [u8]) -> Self {
        Forms {
            wire: body,
            frame: Some(body),
            json: Some(body),
        }
    }

    fn get(&self, signed: Signed) -> Option<&'a [u8]> {
        match signed {
            Signed::Wire => Some(self.wire),
            Signed::Frame => self.frame,
            Signed::Json => self.json,
        }
    }
}

/// A set of layouts as a bit mask over [`Layout::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayoutSet(u32);

impl LayoutSet {
    pub const EVERY: LayoutSet = LayoutSet((1 << 21) - 1);

    pub fn of(layout: Layout) -> Self {
        LayoutSet(1 << layout.index())
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn contains(self, layout: Layout) -> bool {
        self.0 & (1 << layout.index()) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Layout> {
        Layout::ALL.into_iter().filter(move |l| self.contains(*l))
    }

    /// The names, comma-separated, for log lines.
    pub fn names(self) -> String {
        self.iter()
            .map(Layout::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn and(self, other: LayoutSet) -> LayoutSet {
        LayoutSet(self.0 & other.0)
    }
}

/// What one delivery's signature check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The layouts tried under which the signature matched; empty when none did or the
    /// headers were missing or bad.
    pub matched: LayoutSet,
    /// Why the delivery fails the check, if it does: in `enforce` mode a 401.
    pub error: Option<HmacError>,
    /// `x-hmac-timestamp`, when the signature matched within the window: when Thryve signed it.
    pub signed_at: Option<DateTime<Utc>>,
    /// In `auto`, the layouts still possible after this delivery, when it narrowed them.
    pub narrowed: Option<LayoutSet>,
    /// With a fixed layout that failed, the other layouts under which the signature matched
    /// (tried in `report` mode, and at most once a minute in `enforce`): the setting to fix.
    pub instead: LayoutSet,
}

impl Check {
    /// The `layout` label of the signature-check metric: the layout that matched (the first,
    /// when several forms were the same bytes), else the one that would have matched had it
    /// been configured, or "" when none did.
    pub fn metric_layout(&self) -> &'static str {
        self.matched
            .iter()
            .chain(self.instead.iter())
            .next()
            .map_or("", Layout::as_str)
    }

    /// The `result` label of the signature-check metric.
    pub fn metric_result(&self) -> &'static str {
        self.error
            .as_ref()
            .map_or("matched", HmacError::metric_result)
    }
}

/// Checks `x-hmac-signature` / `x-hmac-timestamp` against the secrets (one, or two while it
/// rotates), the layout setting and the mode.
#[derive(Debug, Clone)]
pub struct HmacVerifier {
    secrets: Vec<Secret>,
    setting: LayoutSetting,
    mode: HmacMode,
    window_secs: u64,
    /// `auto`: the layouts every signed delivery so far matched (bit mask over
    /// [`Layout::ALL`]), shared by clones of the verifier.
    candidates: Arc<AtomicU32>,
    /// Second of the last full search for a hint after a refusal in `enforce` mode.
    last_hint: Arc<std::sync::atomic::AtomicI64>,
}

/// A full search of every layout after a refusal costs 21 HMACs of the body: in `enforce`
/// mode a stranger could ask for it, so it runs at most this often.
const HINT_INTERVAL_SECS: i64 = 60;

impl HmacVerifier {
    /// From `WEBHOOK_HMAC_SECRET` (checked by [`config::hmac_secrets`]; several comma-separated while rotating: a signature by
    /// any of them is accepted), `WEBHOOK_HMAC_LAYOUT`, `WEBHOOK_HMAC_MODE` and
    /// `WEBHOOK_HMAC_WINDOW_SECS`.
    pub fn new(
        secret: Secret,
        setting: LayoutSetting,
        mode: HmacMode,
        window_secs: u64,
    ) -> Result<Self, ConfigError> {
        let secrets = config::hmac_secrets(&secret, window_secs)?;
        Ok(Self {
            secrets,
            setting,
            mode,
            window_secs,
            candidates: Arc::new(AtomicU32::new(LayoutSet::EVERY.0)),
            last_hint: Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
        })
    }

    /// The receiver's signature check, when `WEBHOOK_HMAC_SECRET` is set.
    pub fn from_config(config: &ReceiverConfig) -> Result<Option<Self>, ConfigError> {
        config
            .webhook_hmac_secret
            .clone()
            .map(|secret| {
                Self::new(
                    secret,
                    config.webhook_hmac_layout,
                    config.webhook_hmac_mode,
                    config.webhook_hmac_window_secs,
                )
            })
            .transpose()
    }

    /// For the start-up line.
    pub fn setting(&self) -> LayoutSetting {
        self.setting
    }

    pub fn mode(&self) -> HmacMode {
        self.mode
    }

    /// In `auto`, the layouts still possible.
    pub fn candidates(&self) -> LayoutSet {
        LayoutSet(self.candidates.load(Ordering::Relaxed))
    }

    /// Checks a delivery whose body came in `forms` and whose timestamp must lie within the
    /// window around `now`. Pure but for what `auto` has learnt: the caller supplies the clock.
    ///
    /// With a fixed layout only that one is tried; in `report` mode, if it fails, every
    /// other one is tried too, so the log can say which would have matched. In `auto` the
    /// candidates left are tried (in `report` mode, all of them if none of those matches),
    /// and each match narrows the candidates to the layouts it matched.
    ///
    /// ```
    /// use thryve_bridge::{config::Secret, http::hmac::*};
    /// let verifier = HmacVerifier::new(Secret::new("k"), LayoutSetting::Auto, HmacMode::Enforce, 300).unwrap();
    /// let now = chrono::Utc::now();
    /// let timestamp = now.timestamp_millis().to_string();
    /// let layout: Layout = "json+timestamp".parse().unwrap();
    /// let forms = Forms { wire: b"b64", frame: Some(b"zstd"), json: Some(b"{}") };
    /// let mut headers = axum::http::HeaderMap::new();
    /// headers.insert("x-hmac-timestamp", timestamp.parse().unwrap());
    /// let signature = sign(b"k", layout, b"{}", timestamp.as_bytes());
    /// headers.insert("x-hmac-signature", signature.parse().unwrap());
    /// let check = verifier.check(&headers, forms, now);
    /// assert_eq!(check.error, None);
    /// assert_eq!(check.metric_layout(), "json+timestamp");
    /// assert_eq!(verifier.candidates(), LayoutSet::of(layout));
    /// ```
    pub fn check(&self, headers: &HeaderMap, forms: Forms<'_>, now: DateTime<Utc>) -> Check {
        let failed = |error| Check {
            matched: LayoutSet::default(),
            error: Some(error),
            signed_at: None,
            narrowed: None,
            instead: LayoutSet::default(),
        };
        let (signature, timestamp, sent_ms) = match self.headers(headers, now) {
            Ok(parts) => parts,
            Err(error) => return failed(error),
        };
        let timestamp = timestamp.as_bytes();
        let tried = match self.setting {
            LayoutSetting::Fixed(layout) => LayoutSet::of(layout),
            LayoutSetting::Auto => self.candidates(),
        };
        let mut matched = self.matching(tried, forms, timestamp, &signature);
        let mut instead = LayoutSet::default();
        let mut narrowed = None;
        if matched.is_empty() && self.searches_after_miss(now) {
            let others = LayoutSet(LayoutSet::EVERY.0 & !tried.0);
            let found = self.matching(others, forms, timestamp, &signature);
            match self.setting {
                LayoutSetting::Fixed(_) => instead = found,
                // Thryve changed what it signs: start learning again from this delivery.
                LayoutSetting::Auto if self.mode == HmacMode::Report => matched = found,
                LayoutSetting::Auto => instead = found,
            }
        }
        if self.setting == LayoutSetting::Auto && !matched.is_empty() {
            let before = self.candidates();
            let after = match before.and(matched) {
                none if none.is_empty() => matched,
                some => some,
            };
            if after != before {
                self.candidates.store(after.0, Ordering::Relaxed);
                narrowed = Some(after);
            }
        }
        if matched.is_empty() {
            return Check {
                instead,
                ..failed(HmacError::BadSignature)
            };
        }
        Check {
            matched,
            error: None,
            signed_at: Utc.timestamp_millis_opt(sent_ms).single(),
            narrowed,
            instead,
        }
    }

    /// Whether a signature that matched none of the layouts tried is searched for among the
    /// others: always in `report` mode, at most once a minute in `enforce` mode.
    fn searches_after_miss(&self, now: DateTime<Utc>) -> bool {
        if self.mode == HmacMode::Report {
            return true;
        }
        let second = now.timestamp();
        let last = self.last_hint.load(Ordering::Relaxed);
        second.saturating_sub(last) >= HINT_INTERVAL_SECS
            && self
                .last_hint
                .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The signature's bytes, the timestamp's text and its value, once both headers are
    /// present, well-formed and the timestamp is inside the window.
    fn headers<'h>(
        &self,
        headers: &'h HeaderMap,
        now: DateTime<Utc>,
    ) -> Result<([u8; 32], &'h str, i64), HmacError> {
        let signature = single(headers, SIGNATURE_HEADER)?;
        let timestamp = single(headers, TIMESTAMP_HEADER)?;
        let signature = decode_signature(signature.as_bytes())?;
        let timestamp = timestamp.to_str().map_err(|_| HmacError::BadTimestamp)?;
        let sent_ms = Some(timestamp)
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
        Ok((signature, timestamp, sent_ms))
    }

    /// The layouts of `among` under which any secret signed the message. Every secret is
    /// tried for every layout, so the time taken does not say which one signed.
    fn matching(
        &self,
        among: LayoutSet,
        forms: Forms<'_>,
        timestamp: &[u8],
        signature: &[u8; 32],
    ) -> LayoutSet {
        let mut found = LayoutSet::default();
        for layout in among.iter() {
            let Some(body) = forms.get(layout.signed) else {
                continue;
            };
            let mut signed = false;
            for secret in &self.secrets {
                signed |= matches(
                    secret.expose().as_bytes(),
                    layout,
                    body,
                    timestamp,
                    signature,
                );
            }
            if signed {
                found.0 |= 1 << layout.index();
            }
        }
        found
    }
}

/// A signature header's one value: a second copy would leave it unclear which one counts.
fn single<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a HeaderValue, HmacError> {
    super::headers::single_header(headers, name)
        .map_err(|_| HmacError::RepeatedHeader(name))?
        .ok_or(HmacError::MissingHeader(name))
}

/// The layouts under which `signature` is the HMAC of a form of the body and `timestamp`:
/// how an operator finds what Thryve signs from one captured delivery (`thryve-bridge hmac
/// check`).
pub fn matching_layouts(
    secret: &[u8],
    forms: Forms<'_>,
    timestamp: &[u8],
    signature: &[u8],
) -> Vec<Layout> {
    Layout::ALL
        .into_iter()
        .filter(|layout| {
            forms
                .get(layout.signed)
                .is_some_and(|body| matches(secret, *layout, body, timestamp, signature))
        })
        .collect()
}

/// Lower-case hex HMAC-SHA256 of the message `layout` makes of `body` (the form the layout
/// names) and `timestamp`: what a sender puts in `x-hmac-signature`.
pub fn sign(secret: &[u8], layout: Layout, body: &[u8], timestamp: &[u8]) -> String {
    let mut mac = keyed(secret);
    feed(layout, &mut mac, body, timestamp);
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
    feed(layout, &mut mac, body, timestamp);
    signature_eq(mac, signature)
}

#[cfg(test)]
thread_local! {
    /// Calls of [`signature_eq`] on this thread, so a test can see that `verify` uses it.
    static COMPARISONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Feeds the message `layout` signs to `mac` piece by piece, so the body is never copied.
fn feed(layout: Layout, mac: &mut Hmac<Sha256>, body: &[u8], timestamp: &[u8]) {
    let (separator, body_first) = layout.join.parts();
    let timestamp: &[u8] = if layout.join == Join::Body {
        b""
    } else {
        timestamp
    };
    if body_first {
        mac.update(body);
        mac.update(separator);
        mac.update(timestamp);
    } else {
        mac.update(timestamp);
        mac.update(separator);
        mac.update(body);
    }
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

    fn layout(name: &str) -> Layout {
        name.parse().unwrap()
    }

    fn verifier_in(setting: LayoutSetting, mode: HmacMode) -> HmacVerifier {
        HmacVerifier::new(Secret::new(SECRET), setting, mode, 300).unwrap()
    }

    fn verifier(layout: Layout) -> HmacVerifier {
        verifier_in(LayoutSetting::Fixed(layout), HmacMode::Enforce)
    }

    /// A verifier that never searches the other layouts after a miss, so a test can count
    /// the comparisons of one check.
    fn without_hints(v: HmacVerifier) -> HmacVerifier {
        v.last_hint.store(i64::MAX, Ordering::Relaxed);
        v
    }

    fn verify(v: &HmacVerifier, h: &HeaderMap, body: &[u8]) -> Result<(), HmacError> {
        match v.check(h, Forms::plain(body), now()).error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Forms of a data push as they arrive: three different byte strings.
    const PUSH: Forms<'static> = Forms {
        wire: b"KLUv/QBYaQAA",
        frame: Some(b"\x28\xb5\x2f\xfd\x00\x58"),
        json: Some(b"{\"type\":\"event.data.epoch.create\"}"),
    };

    #[test]
    fn rfc_4231_test_case_2() {
        assert_eq!(
            sign(
                b"Jefe",
                layout("wire"),
                b"what do ya want for nothing?",
                b""
            ),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn each_layout_signs_its_own_message() {
        let joins: [(&str, &[u8]); 7] = [
            ("{}+timestamp", b"{}123"),
            ("timestamp+{}", b"123{}"),
            ("{}", b"{}"),
            ("{}.timestamp", b"{}.123"),
            ("timestamp.{}", b"123.{}"),
            ("{}+lf+timestamp", b"{}\n123"),
            ("timestamp+lf+{}", b"123\n{}"),
        ];
        for signed in ["wire", "frame", "json"] {
            for (join, message) in joins {
                let name = join.replace("{}", signed);
                assert_eq!(layout(&name).as_str(), name);
                assert_eq!(
                    sign(b"k", layout(&name), b"{}", b"123"),
                    sign(b"k", layout("wire"), message, b""),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn the_names_of_earlier_versions_still_work() {
        for (old, new) in [
            ("body+timestamp", "wire+timestamp"),
            ("timestamp+body", "timestamp+wire"),
            ("body", "wire"),
            ("body.timestamp", "wire.timestamp"),
            ("timestamp.body", "timestamp.wire"),
            ("body+lf+timestamp", "wire+lf+timestamp"),
            ("timestamp+lf+body", "timestamp+lf+wire"),
        ] {
            assert_eq!(layout(old), layout(new));
        }
        assert_eq!(Layout::WIRE_THEN_TIMESTAMP, layout("body+timestamp"));
        assert_eq!("auto".parse(), Ok(LayoutSetting::Auto));
        assert_eq!(
            "JSON.timestamp".parse(),
            Ok(LayoutSetting::Fixed(layout("json.timestamp")))
        );
        let error = "zstd+timestamp".parse::<LayoutSetting>().unwrap_err();
        assert!(error.contains("frame+timestamp"), "{error}");
        assert_eq!(Layout::ALL.len(), 21);
        for (i, l) in Layout::ALL.into_iter().enumerate() {
            assert_eq!(l.index(), i);
            assert_eq!(layout(l.as_str()), l);
        }
    }

    #[test]
    fn each_layout_is_recognised_over_the_form_it_names() {
        let ts = NOW_MS.to_string();
        for l in Layout::ALL {
            let sig = sign(
                SECRET.as_bytes(),
                l,
                PUSH.get(l.signed).unwrap(),
                ts.as_bytes(),
            );
            let h = headers(&[(SIGNATURE_HEADER, &sig), (TIMESTAMP_HEADER, &ts)]);
            // Fixed to that layout: accepted; fixed to another form: refused, and the report
            // names the one that matched.
            let check = verifier(l).check(&h, PUSH, now());
            assert_eq!(check.error, None, "{l}");
            assert_eq!(check.metric_layout(), l.as_str());
            assert_eq!(check.signed_at, Some(now()));
            let other = Layout::new(
                if l.signed == Signed::Json {
                    Signed::Wire
                } else {
                    Signed::Json
                },
                l.join,
            );
            let check =
                verifier_in(LayoutSetting::Fixed(other), HmacMode::Report).check(&h, PUSH, now());
            assert_eq!(check.error, Some(HmacError::BadSignature), "{l}");
            assert_eq!(check.instead, LayoutSet::of(l));
            assert_eq!(check.signed_at, None);
            // Auto: found from this one delivery.
            let auto = verifier_in(LayoutSetting::Auto, HmacMode::Enforce);
            let check = auto.check(&h, PUSH, now());
            assert_eq!(check.error, None, "{l}");
            assert_eq!(check.narrowed, Some(LayoutSet::of(l)));
            assert_eq!(auto.candidates(), LayoutSet::of(l));
        }
    }

    #[test]
    fn auto_narrows_over_deliveries_whose_forms_are_the_same_bytes() {
        let auto = verifier_in(LayoutSetting::Auto, HmacMode::Enforce);
        let ts = NOW_MS.to_string();
        let json_ts = layout("json+timestamp");
        // A notification: plain JSON, so wire, frame and json are one byte string.
        let body = br#"{"type":"notification.source.connect"}"#;
        let sig = sign(SECRET.as_bytes(), json_ts, body, ts.as_bytes());
        let h = headers(&[(SIGNATURE_HEADER, &sig), (TIMESTAMP_HEADER, &ts)]);
        let check = auto.check(&h, Forms::plain(body), now());
        assert_eq!(check.error, None);
        assert_eq!(
            auto.candidates().names(),
            "wire+timestamp, frame+timestamp, json+timestamp"
        );
        // A push tells the three apart.
        let sig = sign(
            SECRET.as_bytes(),
            json_ts,
            PUSH.json.unwrap(),
            ts.as_bytes(),
        );
        let h = headers(&[(SIGNATURE_HEADER, &sig), (TIMESTAMP_HEADER, &ts)]);
        let check = auto.check(&h, PUSH, now());
        assert_eq!(check.narrowed, Some(LayoutSet::of(json_ts)));
        // Once learnt, a push signed another way is refused in enforce mode...
        let wire_sig = sign(
            SECRET.as_bytes(),
            layout("wire+timestamp"),
            PUSH.wire,
            ts.as_bytes(),
        );
        let h = headers(&[(SIGNATURE_HEADER, &wire_sig), (TIMESTAMP_HEADER, &ts)]);
        assert_eq!(
            auto.check(&h, PUSH, now()).error,
            Some(HmacError::BadSignature)
        );
        assert_eq!(auto.candidates(), LayoutSet::of(json_ts));
        // ...and in report mode it starts learning again from what matched.
        let report = verifier_in(LayoutSetting::Auto, HmacMode::Report);
        report
            .candidates
            .store(LayoutSet::of(json_ts).0, Ordering::Relaxed);
        let check = report.check(&h, PUSH, now());
        assert_eq!(check.error, None);
        assert_eq!(report.candidates(), LayoutSet::of(layout("wire+timestamp")));
    }

    #[test]
    fn a_body_that_did_not_decode_only_matches_over_the_wire() {
        let ts = NOW_MS.to_string();
        let forms = Forms {
            wire: b"garbage",
            frame: None,
            json: None,
        };
        // Signed over the JSON form, which this body never reached: the JSON layout cannot
        // match, and over the wire bytes it is another message under another join.
        let sig = sign(
            SECRET.as_bytes(),
            layout("json+timestamp"),
            b"garbage",
            ts.as_bytes(),
        );
        let h = headers(&[(SIGNATURE_HEADER, &sig), (TIMESTAMP_HEADER, &ts)]);
        let check = verifier(layout("json+timestamp")).check(&h, forms, now());
        assert_eq!(check.error, Some(HmacError::BadSignature));
        let check = verifier(layout("wire.timestamp")).check(&h, forms, now());
        assert_eq!(check.error, Some(HmacError::BadSignature));
        assert_eq!(check.instead, LayoutSet::of(layout("wire+timestamp")));
        let check = verifier(layout("wire+timestamp")).check(&h, forms, now());
        assert_eq!(check.error, None);
    }

    #[test]
    fn enforce_mode_searches_other_layouts_at_most_once_a_minute() {
        let v = verifier(layout("wire+timestamp"));
        let ts = NOW_MS.to_string();
        let sig = sign(
            SECRET.as_bytes(),
            layout("json.timestamp"),
            PUSH.json.unwrap(),
            ts.as_bytes(),
        );
        let h = headers(&[(SIGNATURE_HEADER, &sig), (TIMESTAMP_HEADER, &ts)]);
        let first = v.check(&h, PUSH, now());
        assert_eq!(first.error, Some(HmacError::BadSignature));
        assert_eq!(first.instead, LayoutSet::of(layout("json.timestamp")));
        COMPARISONS.with(|n| n.set(0));
        let second = v.check(&h, PUSH, now());
        assert_eq!(second.instead, LayoutSet::default());
        assert_eq!(COMPARISONS.with(|n| n.get()), 1);
        let later = now() + chrono::Duration::seconds(HINT_INTERVAL_SECS);
        let h = headers(&[
            (
                SIGNATURE_HEADER,
                &sign(
                    SECRET.as_bytes(),
                    layout("json.timestamp"),
                    PUSH.json.unwrap(),
                    later.timestamp_millis().to_string().as_bytes(),
                ),
            ),
            (TIMESTAMP_HEADER, &later.timestamp_millis().to_string()),
        ]);
        assert_eq!(
            v.check(&h, PUSH, later).instead,
            LayoutSet::of(layout("json.timestamp"))
        );
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
                    assert_eq!(verify(&v, &h, b"body"), Ok(()), "{layout} {offset_ms}");
                }
            }
        }
    }

    #[test]
    fn each_refusal_says_what_was_wrong() {
        let wire_ts = Layout::WIRE_THEN_TIMESTAMP;
        let v = verifier(wire_ts);
        let ts = NOW_MS.to_string();
        let good = sign(SECRET.as_bytes(), wire_ts, b"body", ts.as_bytes());
        let stale = (NOW_MS - 300_001).to_string();
        let future = (NOW_MS + 3_600_000).to_string();
        let sign_at = |t: &str| sign(SECRET.as_bytes(), wire_ts, b"body", t.as_bytes());
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
            assert_eq!(verify(&v, &h, b"body"), Err(expected.clone()), "{expected}");
        }
        let h = headers(&[(SIGNATURE_HEADER, &good), (TIMESTAMP_HEADER, &ts)]);
        assert_eq!(verify(&v, &h, b"Body"), Err(HmacError::BadSignature));
        assert_eq!(
            verify(&verifier(layout("timestamp+body")), &h, b"body"),
            Err(HmacError::BadSignature)
        );
    }

    #[test]
    fn a_repeated_signature_or_timestamp_header_is_refused() {
        let v = verifier(Layout::WIRE_THEN_TIMESTAMP);
        let ts = NOW_MS.to_string();
        let good = sign(
            SECRET.as_bytes(),
            Layout::WIRE_THEN_TIMESTAMP,
            b"body",
            ts.as_bytes(),
        );
        let mut h = headers(&[(SIGNATURE_HEADER, &good), (TIMESTAMP_HEADER, &ts)]);
        assert_eq!(verify(&v, &h, b"body"), Ok(()));
        h.append(SIGNATURE_HEADER, HeaderValue::from_str(&good).unwrap());
        assert_eq!(
            verify(&v, &h, b"body"),
            Err(HmacError::RepeatedHeader(SIGNATURE_HEADER))
        );
        let mut h = headers(&[(SIGNATURE_HEADER, &good), (TIMESTAMP_HEADER, &ts)]);
        h.append(TIMESTAMP_HEADER, HeaderValue::from_static("1"));
        assert_eq!(
            verify(&v, &h, b"body"),
            Err(HmacError::RepeatedHeader(TIMESTAMP_HEADER))
        );
    }

    #[test]
    fn while_rotating_either_secret_signs_and_both_are_always_compared_in_constant_time() {
        let v = without_hints(
            HmacVerifier::new(
                Secret::new("old-secret, new-secret"),
                LayoutSetting::Fixed(layout("wire")),
                HmacMode::Enforce,
                300,
            )
            .unwrap(),
        );
        let ts = NOW_MS.to_string();
        for (key, accepted) in [
            ("old-secret", true),
            ("new-secret", true),
            ("new-secreT", false),
            ("old-secret, new-secret", false),
        ] {
            let sig = sign(key.as_bytes(), layout("wire"), b"body", b"");
            let h = headers(&[(SIGNATURE_HEADER, &sig), (TIMESTAMP_HEADER, &ts)]);
            COMPARISONS.with(|n| n.set(0));
            assert_eq!(verify(&v, &h, b"body").is_ok(), accepted, "{key}");
            assert_eq!(COMPARISONS.with(|n| n.get()), 2, "{key}");
        }
        let debug = format!("{v:?}");
        assert!(
            !debug.contains("old-secret") && !debug.contains("new-secret"),
            "{debug}"
        );
        let err = HmacVerifier::new(
            Secret::new(" , "),
            LayoutSetting::Auto,
            HmacMode::Enforce,
            300,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("WEBHOOK_HMAC_SECRET"));
    }

    #[test]
    fn matching_layouts_finds_the_one_used() {
        let l = layout("timestamp.frame");
        let sig = sign(b"s", l, PUSH.frame.unwrap(), b"42");
        let sig = decode_signature(sig.as_bytes()).unwrap();
        assert_eq!(matching_layouts(b"s", PUSH, b"42", &sig), vec![l]);
        assert!(matching_layouts(b"other", PUSH, b"42", &sig).is_empty());
    }

    #[test]
    fn settings_are_checked_and_the_secret_never_printed() {
        let new = |secret: &str, window| {
            HmacVerifier::new(
                Secret::new(secret),
                LayoutSetting::Auto,
                HmacMode::Report,
                window,
            )
        };
        let err = new("", 300).unwrap_err();
        assert!(err.to_string().starts_with("WEBHOOK_HMAC_SECRET"));
        let err = new("k", 0).unwrap_err();
        assert!(err.to_string().starts_with("WEBHOOK_HMAC_WINDOW_SECS"));
        let v = new("hunter2", 300).unwrap();
        assert!(!format!("{v:?}").contains("hunter2"));
    }
}
