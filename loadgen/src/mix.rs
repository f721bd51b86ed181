//! The mix: deliveries shaped as Thryve sends them (pushes as base64 text of a zstd frame,
//! with the observed value counts; notifications), drawn from templates made before a run.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// A small deterministic generator (xorshift64*), so a seed replays the same mix.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

const SOURCES: [i64; 14] = [1, 2, 3, 5, 6, 8, 11, 16, 17, 18, 38, 41, 42, 44];
const EPOCH_TYPES: [i64; 6] = [1000, 1001, 1010, 1200, 3000, 3100];
const DAILY_TYPES: [i64; 5] = [1000, 2000, 3001, 5020, 1010];
const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;
/// 2025-11-24T00:00:00Z: the mix's "today", fixed so runs are comparable.
const TODAY_MS: i64 = 1_763_942_400_000;
/// Stands for the end user in a template's JSON until a request fills it in.
const USER_MARK: &str = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@";
/// Distinct bodies prepared per kind; with `users` end users each, the mix draws from
/// (templates x users) distinct contents, so accidental repeats stay rare.
const TEMPLATES: [(Kind, usize); 6] = [
    (Kind::EpochPush, 1024),
    (Kind::DailyPush, 512),
    (Kind::EpochNotification, 256),
    (Kind::DailyNotification, 256),
    (Kind::Connection, 64),
    (Kind::Legacy, 128),
];

/// What a delivery of the mix is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    EpochPush,
    DailyPush,
    EpochNotification,
    DailyNotification,
    Connection,
    Legacy,
}

impl Kind {
    /// The mix of real traffic (thryve-facts.md): about 90% data pushes, the rest
    /// notifications of both kinds, connection changes and legacy triggers.
    fn draw(rng: &mut Rng) -> Self {
        match rng.below(100) {
            0..=54 => Kind::EpochPush,
            55..=89 => Kind::DailyPush,
            90..=93 => Kind::EpochNotification,
            94..=95 => Kind::DailyNotification,
            96 => Kind::Connection,
            _ => Kind::Legacy,
        }
    }

    pub(crate) fn is_push(self) -> bool {
        matches!(self, Kind::EpochPush | Kind::DailyPush)
    }
}

/// A standard normal draw (sum of twelve uniforms, minus six): enough for a mix.
fn normal(rng: &mut Rng) -> f64 {
    (0..12)
        .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
        .sum::<f64>()
        - 6.0
}

/// Values in an epoch push: 3% full pages of 1,000, the rest log-normal around the observed
/// median of 32.
fn epoch_value_count(rng: &mut Rng) -> usize {
    if rng.chance(0.03) {
        return 1000;
    }
    (32.0 * (0.9 * normal(rng)).exp()).round().clamp(1.0, 999.0) as usize
}

/// Values in a daily push: median about 10, at most 34.
fn daily_value_count(rng: &mut Rng) -> usize {
    (10.0 * (0.6 * normal(rng)).exp()).round().clamp(1.0, 34.0) as usize
}

/// One body of the mix with the end user left open: `head`, the user's id, `tail`. Pushes
/// also carry their wire form, made once: see [`Template::wire`].
#[derive(Debug)]
pub struct Template {
    pub kind: Kind,
    /// Values the body carries (pushes only).
    pub values: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
    zstd: Option<ZstdWire>,
}

/// A push's wire form split where the user goes. The frame is one zstd frame whose first
/// block is a raw (stored) block holding `head` + user and whose other blocks are `tail`
/// compressed once; the raw part is a multiple of 3 bytes long, so the base64 text of the
/// whole frame is the base64 of the raw part followed by `tail_base64`, made once.
#[derive(Debug)]
struct ZstdWire {
    raw_prefix: Vec<u8>,
    tail_base64: Vec<u8>,
}

/// The 32 hex digits of end user `n` (the same ids as before the templates).
pub fn user_id(n: u32) -> String {
    format!("{:032x}", u128::from(n) * 0x9e37_79b9_7f4a_7c15)
}

impl Template {
    fn new(kind: Kind, values: usize, json: &str) -> Self {
        let at = json.find(USER_MARK).expect("a template names its user");
        let (head, tail) = (&json[..at], &json[at + USER_MARK.len()..]);
        let mut template = Template {
            kind,
            values,
            head: head.as_bytes().to_vec(),
            tail: tail.as_bytes().to_vec(),
            zstd: None,
        };
        if kind.is_push() {
            template.zstd = Some(ZstdWire::new(head.as_bytes(), tail.as_bytes()));
        }
        template
    }

    /// The JSON text for `user` (32 hex digits).
    pub fn json(&self, user: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + user.len() + self.tail.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(user.as_bytes());
        out.extend_from_slice(&self.tail);
        out
    }

    /// The bytes sent for `user`, and whether they go under `content-encoding: zstd`: a push
    /// as base64 text of a zstd frame, anything else as plain JSON. One allocation and two
    /// copies; nothing is compressed per request.
    pub fn wire(&self, user: &str) -> (Vec<u8>, bool) {
        use base64::Engine as _;
        let Some(z) = &self.zstd else {
            return (self.json(user), false);
        };
        let mut raw = [0u8; 96];
        let n = z.raw_prefix.len();
        raw[..n].copy_from_slice(&z.raw_prefix);
        raw[n..n + user.len()].copy_from_slice(user.as_bytes());
        let raw = &raw[..n + user.len()];
        let mut out = vec![0u8; raw.len() / 3 * 4 + z.tail_base64.len()];
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(raw, &mut out)
            .expect("the output holds the raw part's base64");
        out[written..].copy_from_slice(&z.tail_base64);
        (out, true)
    }
}

impl ZstdWire {
    /// `head` + a user of `USER_MARK`'s length + `tail` as one frame (see [`ZstdWire`]).
    fn new(head: &[u8], tail: &[u8]) -> Self {
        let raw_len = head.len() + USER_MARK.len();
        let content = u32::try_from(raw_len + tail.len()).expect("a push is under 4 GiB");
        // Magic; a single-segment frame with a 4-byte content size, no checksum, no dictionary.
        let mut raw_prefix = vec![0x28, 0xb5, 0x2f, 0xfd, 0xa0];
        raw_prefix.extend_from_slice(&content.to_le_bytes());
        // A raw block (type 0), not the last: its size in bits 3 and up, 3 bytes little-endian.
        let block = u32::try_from(raw_len).expect("a head is small") << 3;
        raw_prefix.extend_from_slice(&block.to_le_bytes()[..3]);
        raw_prefix.extend_from_slice(head);
        assert_eq!(
            (raw_prefix.len() + USER_MARK.len()) % 3,
            0,
            "the raw part is padded"
        );
        let frame = zstd::encode_all(tail, 3).expect("zstd in memory");
        use base64::Engine as _;
        ZstdWire {
            raw_prefix,
            tail_base64: base64::engine::general_purpose::STANDARD
                .encode(frame_blocks(&frame))
                .into_bytes(),
        }
    }
}

/// The blocks of a zstd frame: what follows its header, less its checksum (RFC 8878 3.1.1).
/// The first block of a frame refers to nothing before it, so the blocks stay valid after
/// a raw block that leaves the repeat offsets as a frame starts them.
fn frame_blocks(frame: &[u8]) -> &[u8] {
    let descriptor = frame[4];
    let single_segment = descriptor & 0x20 != 0;
    let checksum = descriptor & 0x04 != 0;
    let dictionary = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let content_size = match descriptor >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let start = 5 + usize::from(!single_segment) + dictionary + content_size;
    &frame[start..frame.len() - if checksum { 4 } else { 0 }]
}

/// A push's JSON with the user first, and spaces after `{` so that the frame's raw part
/// (12 bytes of frame and block header, this head, the user) is a multiple of 3 bytes.
fn push_json(kind: &str, data: &Value) -> String {
    let head = "{\"endUserId\":\"";
    let pad = (3 - (12 + head.len() + USER_MARK.len()) % 3) % 3;
    format!(
        "{{{spaces}\"endUserId\":\"{USER_MARK}\",\"timestampType\":\"unix\",\"type\":\"{kind}\",\"data\":{data}}}",
        spaces = " ".repeat(pad),
    )
}

/// One body of `kind` with its user left as `USER_MARK`, and the values it carries.
fn template_json(kind: Kind, rng: &mut Rng) -> (String, usize) {
    let source = SOURCES[rng.below(SOURCES.len() as u64) as usize];
    let unix = rng.chance(0.75);
    let instant = |ms: i64| -> Value {
        if unix {
            json!(ms)
        } else {
            json!(DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        }
    };
    let day = |ms: i64| -> Value {
        let ms = ms - ms.rem_euclid(DAY_MS);
        if unix {
            json!(ms)
        } else {
            json!(DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap_or_default()
                .date_naive()
                .to_string())
        }
    };
    let start = TODAY_MS - rng.below(30 * DAY_MS as u64) as i64;
    let start = start - start.rem_euclid(MINUTE_MS);
    let stamp = if unix { "unix" } else { "iso" };
    let alias = format!("alias-{}", rng.below(1 << 20));
    let name = "Source";
    match kind {
        Kind::EpochPush => {
            let n = epoch_value_count(rng);
            let mut values: Vec<Value> = Vec::with_capacity(n);
            if rng.chance(0.05) {
                // Instants sparse over four weeks (a scale's weight readings).
                for i in 0..n as i64 {
                    values.push(json!({"startTimestamp": start - i * 28 * DAY_MS / n as i64,
                        "timezoneOffset": 60, "dataTypeId": 5020,
                        "value": format!("{:.1}", 60.0 + rng.below(400) as f64 / 10.0)}));
                }
            } else {
                if rng.chance(0.3) {
                    // Sleep phases with an end, which Thryve updates when the end moves.
                    for (i, t) in (2000..2004).enumerate().take(n) {
                        let at = start - 8 * 60 * MINUTE_MS + i as i64 * 37 * MINUTE_MS;
                        values.push(
                            json!({"startTimestamp": at, "endTimestamp": at + 20 * MINUTE_MS,
                            "timezoneOffset": 60, "dataTypeId": t, "value": (20 + i).to_string()}),
                        );
                    }
                }
                let mut i = 0i64;
                while values.len() < n {
                    let at = start + i * MINUTE_MS;
                    values.push(if i % 3 == 2 {
                        // Heart rate: an instant, no endTimestamp.
                        json!({"startTimestamp": at, "timezoneOffset": 60, "dataTypeId": 3000,
                               "value": (55 + rng.below(85)).to_string()})
                    } else {
                        json!({"startTimestamp": at, "endTimestamp": at + MINUTE_MS, "timezoneOffset": 60,
                               "dataTypeId": 1000, "value": rng.below(130).to_string()})
                    });
                    i += 1;
                }
            }
            let op = if rng.chance(0.5) { "create" } else { "update" };
            let data =
                json!([{"dataSourceId": source, "dataSourceName": name, "epochData": values}]);
            (push_json(&format!("event.data.epoch.{op}"), &data), n)
        }
        Kind::DailyPush => {
            let n = daily_value_count(rng);
            let first = start - start.rem_euclid(DAY_MS);
            let offset = rng.below(5) as usize;
            let values: Vec<Value> = (0..n)
                .map(|i| json!({"day": first - (i / DAILY_TYPES.len()) as i64 * DAY_MS, "timezoneOffset": 0,
                                "dataTypeId": DAILY_TYPES[(i + offset) % DAILY_TYPES.len()],
                                "value": rng.below(20_000).to_string()}))
                .collect();
            let op = if rng.chance(0.5) { "create" } else { "update" };
            let data =
                json!([{"dataSourceId": source, "dataSourceName": name, "dailyData": values}]);
            (push_json(&format!("event.data.daily.{op}"), &data), n)
        }
        Kind::EpochNotification => {
            let end = start + rng.below(3 * 3_600_000) as i64;
            let body = json!({"endUserId": USER_MARK, "timestampType": stamp,
                "type": "notification.data.epoch.createupdate",
                "data": {"startTimestamp": instant(start), "endTimestamp": instant(end), "dataSourceId": source,
                         "dataTypeIds": pick_types(rng, &EPOCH_TYPES)}});
            (body.to_string(), 0)
        }
        Kind::DailyNotification => {
            let end = start + rng.below(3) as i64 * DAY_MS;
            let body = json!({"endUserId": USER_MARK, "endUserAlias": alias, "timestampType": stamp,
                "type": "notification.data.daily.createupdate",
                "data": {"startDay": day(start), "endDay": day(end), "dataSourceId": source,
                         "dataTypeIds": pick_types(rng, &DAILY_TYPES)}});
            (body.to_string(), 0)
        }
        Kind::Connection => {
            let kind = if rng.chance(0.8) {
                "notification.source.connect"
            } else {
                "notification.source.disconnect"
            };
            let body = json!({"endUserId": USER_MARK, "timestampType": stamp, "type": kind,
                "data": {"timestamp": instant(start), "dataSourceId": source}});
            (body.to_string(), 0)
        }
        Kind::Legacy => {
            let end = start + rng.below(6 * 3_600_000) as i64;
            let iso = |ms: i64| {
                DateTime::<Utc>::from_timestamp_millis(ms)
                    .unwrap_or_default()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            // Half in the v5 shape, half in the older trigger shape (no types, a string id).
            let body = if rng.chance(0.5) {
                json!({"sourceUpdate": {"authenticationToken": USER_MARK, "partnerUserID": alias,
                    "dataSource": source, "createdAt": iso(end),
                    "/v5/dynamicEpochValues": {"startTimestamp": iso(start), "endTimestamp": iso(end),
                        "dynamicValueTypes": pick_types(rng, &EPOCH_TYPES), "startTimestampUnix": start, "endTimestampUnix": end}}})
            } else {
                let update_type = ["MINUTE", "DAILY", "BOTH"][rng.below(3) as usize];
                json!({"sourceUpdate": {"authenticationToken": USER_MARK, "partnerUserID": alias,
                    "dataSource": source.to_string(), "startTimestamp": iso(start), "endTimestamp": iso(end),
                    "updateType": update_type}})
            };
            (body.to_string(), 0)
        }
    }
}

fn pick_types(rng: &mut Rng, pool: &[i64]) -> Vec<i64> {
    (0..1 + rng.below(3))
        .map(|_| pool[rng.below(pool.len() as u64) as usize])
        .collect()
}

/// One delivery of the mix for one of `users` end users: body, and whether it goes out as
/// Thryve sends a data push (base64 text of a zstd frame under `content-encoding: zstd`).
pub fn delivery(rng: &mut Rng, users: u32) -> (Value, bool) {
    let kind = Kind::draw(rng);
    let (json, _) = template_json(kind, rng);
    let user = user_id(rng.below(u64::from(users)) as u32);
    let body = serde_json::from_str(&json.replacen(USER_MARK, &user, 1)).expect("valid JSON");
    (body, kind.is_push())
}

/// The templates of a run, made before the clock starts and shared by every worker.
pub struct Mix {
    templates: Vec<Vec<Arc<Template>>>,
    users: Vec<String>,
}

impl Mix {
    /// `TEMPLATES` bodies per kind from `seed`, for `users` end users.
    pub fn new(seed: u64, users: u32) -> Self {
        let mut rng = Rng::new(seed);
        let templates = TEMPLATES
            .iter()
            .map(|&(kind, count)| {
                (0..count)
                    .map(|_| {
                        let (json, values) = template_json(kind, &mut rng);
                        Arc::new(Template::new(kind, values, &json))
                    })
                    .collect()
            })
            .collect();
        let users = (0..users.max(1)).map(user_id).collect();
        Mix { templates, users }
    }

    /// A fresh delivery: a kind drawn by the mix's shares, one of its templates, a user.
    pub fn draw(&self, rng: &mut Rng) -> SentBody {
        let kind = Kind::draw(rng);
        let list = &self.templates[TEMPLATES
            .iter()
            .position(|(k, _)| *k == kind)
            .expect("every kind has templates")];
        SentBody {
            template: list[rng.below(list.len() as u64) as usize].clone(),
            user: rng.below(self.users.len() as u64) as u32,
        }
    }

    /// A fresh notification (epoch or daily, in their shares of the mix): what the receiver
    /// alone is measured on against the notification-row anchor (A0).
    pub fn draw_notification(&self, rng: &mut Rng) -> SentBody {
        loop {
            let body = self.draw(rng);
            if matches!(
                body.template.kind,
                Kind::EpochNotification | Kind::DailyNotification
            ) {
                return body;
            }
        }
    }

    /// What goes on the wire for `body`.
    pub fn wire(&self, body: &SentBody) -> (Vec<u8>, bool) {
        body.template.wire(&self.users[body.user as usize])
    }
}

/// Which delivery a request sent: a template and an end user, cheap to keep per request.
#[derive(Debug, Clone)]
pub struct SentBody {
    pub template: Arc<Template>,
    pub user: u32,
}

impl SentBody {
    /// The delivery's JSON body.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.template.json(&user_id(self.user))).expect("valid JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thryve_bridge::{
        http::decode::{decode, WireForm},
        thryve::{self, Parsed},
    };

    #[test]
    fn every_template_goes_out_in_the_wire_form_and_decodes_to_its_json() {
        let mix = Mix::new(1, 10);
        for list in &mix.templates {
            for template in list.iter().step_by(7) {
                let user = user_id(3);
                let (wire, zstd) = template.wire(&user);
                assert_eq!(zstd, template.kind.is_push());
                let decoded = decode(zstd.then_some("zstd"), &wire, 4 << 20).unwrap();
                if zstd {
                    assert_eq!(decoded.form, WireForm::Base64);
                }
                assert_eq!(decoded.content, template.json(&user));
                let body: Value = serde_json::from_slice(&decoded.content).unwrap();
                let Value::Object(body) = body else {
                    panic!("not an object")
                };
                assert!(
                    matches!(thryve::parse(&body), Parsed::Valid(_)),
                    "{:?}",
                    template.kind
                );
            }
        }
    }

    #[test]
    fn the_mix_is_mostly_pushes_with_the_observed_value_counts() {
        let mut rng = Rng::new(9);
        let kinds: Vec<Kind> = (0..10_000).map(|_| Kind::draw(&mut rng)).collect();
        let pushes = kinds.iter().filter(|k| k.is_push()).count();
        assert!((8_800..=9_200).contains(&pushes), "{pushes}");
        let mut epoch: Vec<usize> = (0..10_000).map(|_| epoch_value_count(&mut rng)).collect();
        epoch.sort_unstable();
        assert!((28..=36).contains(&epoch[5_000]), "{}", epoch[5_000]);
        assert_eq!(epoch[9_999], 1000);
        let mut daily: Vec<usize> = (0..10_000).map(|_| daily_value_count(&mut rng)).collect();
        daily.sort_unstable();
        assert!((9..=11).contains(&daily[5_000]) && daily[9_999] <= 34);
    }
}
