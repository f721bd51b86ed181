//! Fuzzing the body decoder and parser with proptest: arbitrary bytes, mutations of the corpus
//! in `tests/corpus/`, and random JSON trees. Every input must end in a delivery or a 400, 413
//! or 415; never a panic; never more memory than a fixed multiple of the body limit.
//!
//! `cargo test --test fuzz` runs a few hundred cases per property; `bench/fuzz` runs the same
//! properties in release with `PROPTEST_CASES=200000`.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    io::Write,
    path::Path,
    time::Instant,
};

use axum::http::{header, HeaderMap, HeaderValue};
use chrono::{DateTime, NaiveDate, Utc};
use proptest::{
    prelude::*,
    sample::Index,
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::{json, Map, Value};
use thryve_bridge::{
    http::{decode::decode_body, delivery::MAX_DEPTH, parse_delivery},
    inbox::{NewDelivery, Status},
    thryve::{self, Parsed, Span, MAX_DISTINCT_DATA_TYPES, MAX_ID_BYTES},
};

// ---------------------------------------------------------------------------------------------
// Memory: a per-thread count of live heap bytes and its peak, so each case's allocations can be
// measured while other tests run on other threads. (zstd's C allocations are not seen; its
// window is capped at 8 MiB by decode_body.)

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        account(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            account(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most heap bytes it held at once beyond what was
/// live before it started.
fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, (peak - base).max(0) as usize)
}

/// Heap a parse may use, as a multiple of the body limit, plus a constant. A parsed JSON
/// tree costs more than its text (`[{"a":0},...]` is a B-tree node per 8 bytes); the
/// `amplification` property below finds the worst shapes and prints the factor measured.
const HEAP_PER_LIMIT_BYTE: usize = 160;
const HEAP_CONSTANT: usize = 4 << 20;

// ---------------------------------------------------------------------------------------------
// The oracle: what every answer must satisfy.

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Runs `property` over `strategy` for `cases()` cases and prints how long it took.
fn fuzz<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let started = Instant::now();
    let result = runner.run(&strategy, property);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {name}: {cases} cases in {secs:.1} s ({:.0} cases/s)",
        f64::from(cases) / secs.max(1e-9)
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

fn headers(encoding: Option<&str>, content_type: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(v) = encoding.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(header::CONTENT_ENCODING, v);
    }
    if let Some(v) = content_type.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers
}

/// Parses one request body and checks the answer; returns it for properties that want more.
fn answer(
    headers: &HeaderMap,
    raw: &[u8],
    limit: usize,
) -> Result<Result<NewDelivery, u16>, TestCaseError> {
    let (result, heap) = peak_bytes(|| parse_delivery(headers, raw, limit));
    prop_assert!(
        heap <= HEAP_PER_LIMIT_BYTE * limit + HEAP_CONSTANT,
        "{heap} heap bytes for a {limit}-byte limit"
    );
    match result {
        Ok(delivery) => {
            check_delivery(&delivery)?;
            Ok(Ok(delivery))
        }
        Err(error) => {
            let status = error.status().as_u16();
            prop_assert!(
                matches!(status, 400 | 413 | 415),
                "{status} is not a parse answer: {error}"
            );
            let text = error.to_string();
            prop_assert!(text.len() <= 512, "error message of {} bytes", text.len());
            Ok(Err(status))
        }
    }
}

fn in_range(t: &DateTime<Utc>) -> bool {
    (0..=253_402_300_799_999).contains(&t.timestamp_millis())
}

fn day_in_range(d: &NaiveDate) -> bool {
    (1970..=9999).contains(&chrono::Datelike::year(d))
}

/// What a committed row needs: columns Postgres accepts, a payload serde_json reads back (the
/// poller and `inbox replay` read it), and for a pending row, work the poller can do.
fn check_delivery(d: &NewDelivery) -> Result<(), TestCaseError> {
    for (name, text) in [
        ("event_type", &d.event_type),
        ("end_user_id", &d.end_user_id),
        ("end_user_alias", &d.end_user_alias),
    ] {
        let len = text.as_ref().map_or(0, String::len);
        prop_assert!(len <= MAX_ID_BYTES, "{name} of {len} bytes");
        prop_assert!(!text.as_deref().unwrap_or("").contains('\0'));
    }
    prop_assert!(!d.payload.contains("\\u0000"), "NUL in the payload");
    let reread: Value = serde_json::from_str(&d.payload)
        .map_err(|e| TestCaseError::fail(format!("payload does not read back: {e}")))?;
    prop_assert_eq!(thryve::canonical_json(&reread), d.payload.as_bytes());
    prop_assert_eq!(thryve::fingerprint(d.payload.as_bytes()), d.fingerprint);
    prop_assert_eq!(d.error.is_some(), d.status == Status::Quarantined);
    if let Some(error) = &d.error {
        prop_assert!(error.len() <= 512, "reason of {} bytes", error.len());
    }
    let t = &d.typed;
    if let Some(ids) = &t.data_type_ids {
        prop_assert!(ids.len() <= MAX_DISTINCT_DATA_TYPES);
        prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
        prop_assert!(ids.iter().all(|&id| id > 0));
    }
    for instant in [t.start_time, t.end_time, t.event_time].iter().flatten() {
        prop_assert!(in_range(instant), "{instant}");
    }
    for day in [t.start_day, t.end_day].iter().flatten() {
        prop_assert!(day_in_range(day), "{day}");
    }
    if d.status == Status::Pending {
        // The poller re-parses the stored payload: it must see the same valid notification.
        let Value::Object(body) = &reread else {
            return Err(TestCaseError::fail("pending payload is not an object"));
        };
        let Parsed::Valid(n) = thryve::parse(body) else {
            return Err(TestCaseError::fail(
                "pending payload does not re-parse as valid",
            ));
        };
        let effects = n.effects();
        for span in &effects.spans {
            let ids = match span {
                Span::Epoch(s) => {
                    prop_assert!(in_range(&s.start) && in_range(&s.end) && s.start <= s.end);
                    &s.data_type_ids
                }
                Span::Daily(s) => {
                    prop_assert!(
                        day_in_range(&s.start) && day_in_range(&s.end) && s.start <= s.end
                    );
                    &s.data_type_ids
                }
            };
            // Empty means all types: legacy triggers name no types.
            prop_assert!(ids.len() <= MAX_DISTINCT_DATA_TYPES);
            prop_assert!(!ids.is_empty() || n.event_type == thryve::LEGACY_EVENT_TYPE);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The corpus.

struct Sample {
    name: String,
    /// The content: JSON, or the form body of a `.form` file.
    body: Vec<u8>,
    form: bool,
    /// For a `.zst.b64` file, the body as Thryve puts it on the wire under
    /// `content-encoding: zstd`: base64 text of a zstd frame.
    wire: Option<Vec<u8>>,
}

fn corpus() -> Vec<Sample> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut samples: Vec<Sample> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_none_or(|e| e != "py"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap();
            let (body, wire) = if name.ends_with(".zst.b64") {
                let body = decode_body(Some("zstd"), &bytes, 1 << 20)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                (body, Some(bytes))
            } else {
                (bytes, None)
            };
            Sample {
                name,
                body,
                form: path.extension().is_some_and(|e| e == "form"),
                wire,
            }
        })
        .collect();
    samples.sort_by(|a, b| a.name.cmp(&b.name));
    samples
}

const FORM: &str = "application/x-www-form-urlencoded; charset=UTF-8";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 1).unwrap()
}

fn base64(data: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .encode(data)
        .into_bytes()
}

/// Every way a body may come: plain, a compressed frame, or base64 text of one (Thryve's
/// data pushes), also broken into MIME lines.
#[derive(Debug, Clone, Copy)]
enum Coding {
    Identity,
    Zstd,
    Gzip,
    Deflate,
    Base64Zstd,
    Base64Gzip,
    Base64ZstdLines,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Base64Zstd => "base64 of zstd",
            Coding::Base64Gzip => "base64 of gzip",
            Coding::Base64ZstdLines => "base64 of zstd in lines",
        }
    }

    const ALL: [Coding; 7] = [
        Coding::Identity,
        Coding::Zstd,
        Coding::Gzip,
        Coding::Deflate,
        Coding::Base64Zstd,
        Coding::Base64Gzip,
        Coding::Base64ZstdLines,
    ];

    fn apply(self, data: &[u8]) -> (Vec<u8>, Option<&'static str>) {
        match self {
            Coding::Identity => (data.to_vec(), None),
            Coding::Zstd => (zstd(data), Some("zstd")),
            Coding::Gzip => (gzip(data), Some("gzip")),
            Coding::Deflate => (zlib(data), Some("deflate")),
            Coding::Base64Zstd => (base64(&zstd(data)), Some("zstd")),
            Coding::Base64Gzip => (base64(&gzip(data)), Some("gzip")),
            Coding::Base64ZstdLines => {
                let text = base64(&zstd(data));
                (
                    text.chunks(76).collect::<Vec<_>>().join(&b"\r\n"[..]),
                    Some("zstd"),
                )
            }
        }
    }
}

fn coding() -> impl Strategy<Value = Coding> {
    (0..Coding::ALL.len()).prop_map(|i| Coding::ALL[i])
}

/// Every corpus file, with the outcome it must get: a new file here fails until it is listed.
#[test]
fn each_corpus_file_gets_its_outcome_in_every_encoding() {
    let expected = [
        ("legacy-connection-string-source.json", Status::Pending),
        ("legacy-connection.form", Status::Pending),
        ("legacy-source-update.json", Status::Pending),
        ("legacy-trigger-both.json", Status::Pending),
        ("legacy-trigger-minute.form", Status::Pending),
        ("notification-daily-iso.json", Status::Pending),
        ("notification-daily-unix.json", Status::Pending),
        ("notification-epoch-iso.json", Status::Pending),
        ("notification-epoch-unix.json", Status::Pending),
        ("push-daily-iso.zst.b64", Status::Pending),
        ("push-daily-unix.zst.b64", Status::Pending),
        ("push-epoch-page-1000.zst.b64", Status::Pending),
        ("push-epoch-sparse.zst.b64", Status::Pending),
        ("push-epoch-unix.zst.b64", Status::Pending),
        ("push-v6-daily-iso-object.zst.b64", Status::Pending),
        ("push-v6-epoch-iso-object.zst.b64", Status::Pending),
        ("push-v6-epoch-unix-annotated.zst.b64", Status::Pending),
        ("push-v6-epoch-unix-object-plain.zst.b64", Status::Pending),
        (
            "quarantined-epoch-start-after-end.json",
            Status::Quarantined,
        ),
        ("source-connect-unix.json", Status::Pending),
        ("source-disconnect-iso.json", Status::Pending),
        ("unknown-type.json", Status::Ignored),
    ];
    let samples = corpus();
    let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    let listed: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, listed, "tests/corpus and this table differ");
    for (sample, (_, status)) in samples.iter().zip(expected) {
        let content_type = if sample.form {
            FORM
        } else {
            "application/json"
        };
        let mut fingerprints = Vec::new();
        let as_captured = sample
            .wire
            .clone()
            .map(|wire| (wire, Some("zstd"), "as captured"));
        let encoded = Coding::ALL.into_iter().map(|coding| {
            let (raw, encoding) = coding.apply(&sample.body);
            (raw, encoding, coding.name())
        });
        for (raw, encoding, coding) in as_captured.into_iter().chain(encoded) {
            let delivery = parse_delivery(&headers(encoding, Some(content_type)), &raw, 1 << 20)
                .unwrap_or_else(|e| panic!("{} {coding}: {e}", sample.name));
            assert_eq!(delivery.status, status, "{} {coding}", sample.name);
            check_delivery(&delivery).unwrap();
            fingerprints.push(delivery.fingerprint);
        }
        fingerprints.dedup();
        assert_eq!(fingerprints.len(), 1, "{}: one content", sample.name);
    }
}

// ---------------------------------------------------------------------------------------------
// (a) Arbitrary bytes under arbitrary headers.

fn encoding_header() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("identity".to_owned())),
        Just(Some("zstd".to_owned())),
        Just(Some("gzip".to_owned())),
        Just(Some("x-gzip".to_owned())),
        Just(Some("deflate".to_owned())),
        Just(Some("gzip, zstd".to_owned())),
        Just(Some("br".to_owned())),
        Just(Some(vec!["gzip"; 100].join(","))),
        "[a-zA-Z, -]{0,24}".prop_map(Some),
    ]
}

fn content_type_header() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("application/json".to_owned())),
        Just(Some(FORM.to_owned())),
        Just(Some("application/x-www-form-urlencoded".to_owned())),
        "[ -~]{0,40}".prop_map(Some),
    ]
}

/// Bytes built from JSON's tokens and the troublemakers, so that many inputs get past the
/// first byte of the JSON parser.
fn json_ish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(&b"{"[..]),
        Just(&b"}"[..]),
        Just(&b"["[..]),
        Just(&b"]"[..]),
        Just(&b"\""[..]),
        Just(&b":"[..]),
        Just(&b","[..]),
        Just(&b"\"type\":\"notification.data.epoch.createupdate\""[..]),
        Just(&b"\"endUserId\":\"u\""[..]),
        Just(&b"\"data\":"[..]),
        Just(&b"\"sourceUpdate\":"[..]),
        Just(&b"\"dataTypeIds\":[1,2]"[..]),
        Just(&b"\"startTimestamp\":-1"[..]),
        Just(&b"\\u0000"[..]),
        Just(&b"\\ud800"[..]),
        Just(&b"\xff\xfe"[..]),
        Just(&b"1e400"[..]),
        Just(&b"-0.0"[..]),
        Just(&b"18446744073709551616"[..]),
        Just(&b"true"[..]),
        Just(&b"null"[..]),
        Just(&b"sourceUpdate="[..]),
        Just(&b"%7B"[..]),
        Just(&b"&"[..]),
        Just(&b" "[..]),
    ];
    prop::collection::vec(token, 0..64).prop_map(|tokens| tokens.concat())
}

#[test]
fn arbitrary_bytes_under_arbitrary_headers_get_a_documented_answer() {
    let bytes = prop_oneof![prop::collection::vec(any::<u8>(), 0..2048), json_ish()];
    fuzz(
        "arbitrary_bytes",
        cases(),
        (
            bytes,
            encoding_header(),
            content_type_header(),
            1usize..4096,
        ),
        |(raw, encoding, content_type, limit)| {
            answer(
                &headers(encoding.as_deref(), content_type.as_deref()),
                &raw,
                limit,
            )
            .map(drop)
        },
    );
}

#[test]
fn arbitrary_bytes_inside_a_valid_compression_get_a_documented_answer() {
    fuzz(
        "compressed_bytes",
        cases(),
        (
            prop_oneof![prop::collection::vec(any::<u8>(), 0..2048), json_ish()],
            coding(),
            content_type_header(),
            prop::option::of((any::<Index>(), any::<u8>())),
        ),
        |(data, coding, content_type, flip)| {
            let (mut raw, encoding) = coding.apply(&data);
            if let Some((at, bits)) = flip.filter(|_| !raw.is_empty()) {
                let i = at.index(raw.len());
                raw[i] ^= bits;
            }
            answer(&headers(encoding, content_type.as_deref()), &raw, 4096).map(drop)
        },
    );
}

/// Runs of one byte, compressed: bombs of every size around the limit.
#[test]
fn decoded_output_never_exceeds_the_limit() {
    fuzz(
        "decode_limit",
        cases(),
        (
            any::<u8>(),
            0usize..(64 << 10),
            coding(),
            1usize..(16 << 10),
        ),
        |(byte, len, coding, limit)| {
            let (raw, encoding) = coding.apply(&vec![byte; len]);
            let (decoded, heap) = peak_bytes(|| decode_body(encoding, &raw, limit));
            match decoded {
                Ok(out) => prop_assert!(out.len() <= limit && out.len() == len),
                Err(e) => prop_assert!(len > limit || raw.len() > limit, "{e}"),
            }
            prop_assert!(heap <= 4 * limit + (1 << 20), "{heap} heap bytes");
            Ok(())
        },
    );
}

/// What can go wrong with base64 text on the way, and what a sender might do besides.
#[derive(Debug, Clone)]
enum Base64Fault {
    /// Cut short.
    Truncate(Index),
    /// A byte inserted somewhere: outside the alphabet, or `=` in the middle.
    Insert(Index, u8),
    /// Padding stripped or added.
    Padding(usize),
    /// Line breaks, spaces and tabs inserted: must change nothing.
    Whitespace(Vec<(Index, &'static str)>),
    /// Base64 twice.
    Twice,
}

fn base64_fault() -> impl Strategy<Value = Base64Fault> {
    prop_oneof![
        any::<Index>().prop_map(Base64Fault::Truncate),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Base64Fault::Insert(i, b)),
        (0usize..4).prop_map(Base64Fault::Padding),
        prop::collection::vec(
            (
                any::<Index>(),
                prop_oneof![Just("\r\n"), Just("\n"), Just(" "), Just("\t")]
            ),
            1..8
        )
        .prop_map(Base64Fault::Whitespace),
        Just(Base64Fault::Twice),
    ]
}

/// Base64 bodies as they may arrive broken: every one gets a documented answer, white space
/// anywhere and missing padding change nothing, and anything else that changes the text is
/// a 400 (or, by chance, another valid body).
#[test]
fn base64_bodies_broken_in_every_way_get_a_documented_answer() {
    let samples: Vec<Sample> = corpus().into_iter().filter(|s| !s.form).collect();
    let count = samples.len();
    fuzz(
        "base64_faults",
        cases(),
        (0..count, base64_fault(), prop::bool::ANY),
        |(which, fault, gzip_frame)| {
            let sample = &samples[which];
            let coding = if gzip_frame {
                Coding::Base64Gzip
            } else {
                Coding::Base64Zstd
            };
            let (good, encoding) = coding.apply(&sample.body);
            let json = Some("application/json");
            let original = answer(&headers(encoding, json), &good, 1 << 20)?
                .map_err(|s| TestCaseError::fail(format!("{s} for the unbroken body")))?;
            let text = good.clone();
            let (raw, same) = match &fault {
                Base64Fault::Truncate(i) => {
                    let at = i.index(text.len());
                    (text[..at].to_vec(), false)
                }
                Base64Fault::Insert(i, byte) => {
                    let mut raw = text.clone();
                    raw.insert(i.index(text.len() + 1), *byte);
                    let harmless = matches!(byte, b'\r' | b'\n' | b' ' | b'\t');
                    (raw, harmless)
                }
                Base64Fault::Padding(n) => {
                    let trimmed = text
                        .strip_suffix(b"==")
                        .or(text.strip_suffix(b"="))
                        .unwrap_or(&text);
                    let mut raw = trimmed.to_vec();
                    raw.extend(std::iter::repeat_n(b'=', *n));
                    // As many `=` as the text needs, or none, is the same body.
                    let needed = (4 - trimmed.len() % 4) % 4;
                    (raw, *n == 0 || *n == needed)
                }
                Base64Fault::Whitespace(spots) => {
                    let mut raw = text.clone();
                    for (i, space) in spots {
                        let at = i.index(raw.len() + 1);
                        raw.splice(at..at, space.bytes());
                    }
                    (raw, true)
                }
                Base64Fault::Twice => (base64(&text), false),
            };
            let got = answer(&headers(encoding, json), &raw, 1 << 20)?;
            match got {
                Ok(delivery) if same => prop_assert_eq!(delivery.fingerprint, original.fingerprint),
                Err(status) if same => {
                    return Err(TestCaseError::fail(format!("{status} for {fault:?}")))
                }
                Err(status) => prop_assert_eq!(status, 400, "{:?}", fault),
                // Cutting base64 text at a quantum boundary can still leave a whole frame.
                Ok(_) => {}
            }
            Ok(())
        },
    );
}

/// A bomb inside base64: refused at the limit, and the heap it took, printed, stays within a
/// few times the limit (zstd's own window, at most 8 MiB, is C memory and not counted).
#[test]
fn a_base64_wrapped_bomb_is_refused_in_bounded_heap() {
    let limit = 1 << 20;
    let bomb = zstd::encode_all(&vec![b'{'; 256 << 20][..], 19).unwrap();
    let wire = base64(&bomb);
    let lines = Coding::Base64ZstdLines.apply(&vec![b' '; 64 << 20]).0;
    for (name, raw) in [("base64", &wire), ("base64 in lines", &lines)] {
        let (result, heap) =
            peak_bytes(|| parse_delivery(&headers(Some("zstd"), None), raw, limit));
        let status = result.map(drop).unwrap_err().status().as_u16();
        println!(
            "{name} bomb: {} wire bytes inflating to over 64 MiB: {status}, {heap} heap bytes ({:.2}x the {limit}-byte limit)",
            raw.len(),
            heap as f64 / limit as f64
        );
        assert_eq!(status, 413);
        assert!(heap <= 3 * limit, "{heap}");
    }
}

// ---------------------------------------------------------------------------------------------
// (b) Structure-aware: mutations of the corpus.

/// A value of some other type (or a hostile one of the same type) to put in a field's place.
fn swap_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![
            Just(0_i64),
            Just(-1),
            Just(i64::from(i32::MAX)),
            Just(i64::from(i32::MAX) + 1),
            Just(1 << 40),
            Just(i64::MIN),
            Just(i64::MAX),
            Just(-86_400_000),
            Just(253_402_300_800_000),
            any::<i64>(),
        ]
        .prop_map(Value::from),
        Just(json!(u64::MAX)),
        prop_oneof![
            Just(1e30),
            Just(-0.0),
            Just(1.5),
            Just(1e20),
            Just(f64::MAX)
        ]
        .prop_map(Value::from),
        prop_oneof![
            Just(String::new()),
            Just("'; DROP TABLE thryve.inbox; --".to_owned()),
            Just("1969-12-31T23:59:59Z".to_owned()),
            Just("+10000-01-01T00:00:00Z".to_owned()),
            Just("+262143-01-01".to_owned()),
            Just("2024-02-30".to_owned()),
            Just("x".repeat(MAX_ID_BYTES + 1)),
            Just("nul\u{0}".to_owned()),
            Just("é\u{1F600}\u{FEFF}".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        (1usize..1100).prop_map(|n| json!((1..=n as i64).collect::<Vec<_>>())),
        (1usize..MAX_DEPTH + 2).prop_map(nested),
        json_tree(),
    ]
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, i| {
        if i % 2 == 0 {
            json!([inner])
        } else {
            json!({ "k": inner })
        }
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the n-th node (pre-order) with another value.
    Swap(Index, Value),
    /// Write a key of the n-th object twice, the first time with another value.
    DuplicateKey(Index, Value),
    /// Remove a key of the n-th object.
    Remove(Index),
    FlipBits(Index, u8),
    Truncate(Index),
    /// Put a slice of another corpus file at a position.
    Splice(Index, Index, Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), swap_value()).prop_map(|(i, v)| Mutation::Swap(i, v)),
        1 => (any::<Index>(), swap_value()).prop_map(|(i, v)| Mutation::DuplicateKey(i, v)),
        1 => any::<Index>().prop_map(Mutation::Remove),
        1 => (any::<Index>(), 1u8..).prop_map(|(i, b)| Mutation::FlipBits(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(f, a, b, at)| Mutation::Splice(f, a, b, at)),
    ]
}

/// Pre-order pointers (RFC 6901) of every node of `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let key = k.replace('~', "~0").replace('/', "~1");
                pointers(item, format!("{at}/{key}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn objects(value: &Value) -> Vec<String> {
    let mut all = Vec::new();
    pointers(value, String::new(), &mut all);
    all.retain(|p| {
        value
            .pointer(p)
            .is_some_and(|v| v.as_object().is_some_and(|m| !m.is_empty()))
    });
    all
}

/// Applies the mutations in order: JSON-level ones while the text still parses, byte-level
/// ones on the text. A form sample is mutated as the JSON of its field.
fn mutate(sample: &Sample, samples: &[Sample], mutations: &[Mutation]) -> Vec<u8> {
    let mut text = if sample.form {
        form_field(&sample.body).into_bytes()
    } else {
        sample.body.clone()
    };
    let mut value: Option<Value> = serde_json::from_slice(&text).ok();
    for m in mutations {
        match (m, value.as_mut()) {
            (Mutation::Swap(i, new), Some(v)) => {
                let mut all = Vec::new();
                pointers(v, String::new(), &mut all);
                let p = &all[i.index(all.len())];
                if p.is_empty() {
                    *v = new.clone();
                } else {
                    *v.pointer_mut(p).unwrap() = new.clone();
                }
                text = serde_json::to_vec(v).unwrap();
            }
            (Mutation::DuplicateKey(i, new), Some(v)) => {
                let all = objects(v);
                if all.is_empty() {
                    continue;
                }
                let p = &all[i.index(all.len())];
                let target = v.pointer(p).unwrap().as_object().unwrap().clone();
                let key = target.keys().next().unwrap().clone();
                let original = serde_json::to_string(&target).unwrap();
                let duplicated = format!(
                    "{{{}:{},{}",
                    serde_json::to_string(&key).unwrap(),
                    new,
                    &original[1..]
                );
                // A unique marker where the object goes, then the object written by hand. The
                // last of duplicate keys wins, so `value` stays what it was.
                let marker = "\u{1}duplicate-key-marker\u{1}";
                let mut marked = v.clone();
                if p.is_empty() {
                    marked = Value::from(marker);
                } else {
                    *marked.pointer_mut(p).unwrap() = Value::from(marker);
                }
                let marked = serde_json::to_string(&marked).unwrap();
                let quoted = serde_json::to_string(marker).unwrap();
                text = marked.replacen(&quoted, &duplicated, 1).into_bytes();
            }
            (Mutation::Remove(i), Some(v)) => {
                let all = objects(v);
                if all.is_empty() {
                    continue;
                }
                let p = &all[i.index(all.len())];
                let map = v.pointer_mut(p).unwrap().as_object_mut().unwrap();
                let key = map.keys().next().unwrap().clone();
                map.remove(&key);
                text = serde_json::to_vec(v).unwrap();
            }
            (Mutation::FlipBits(i, bits), _) if !text.is_empty() => {
                let at = i.index(text.len());
                text[at] ^= bits;
                value = serde_json::from_slice(&text).ok();
            }
            (Mutation::Truncate(i), _) => {
                text.truncate(i.index(text.len() + 1));
                value = serde_json::from_slice(&text).ok();
            }
            (Mutation::Splice(file, from, to, at), _) => {
                let other = &samples[file.index(samples.len())].body;
                let (a, b) = (from.index(other.len() + 1), to.index(other.len() + 1));
                let piece = &other[a.min(b)..a.max(b)];
                let at = at.index(text.len() + 1);
                text.splice(at..at, piece.iter().copied());
                value = serde_json::from_slice(&text).ok();
            }
            _ => {}
        }
    }
    text
}

/// The `sourceUpdate` field of a form body.
fn form_field(body: &[u8]) -> String {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "sourceUpdate")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[test]
fn mutated_corpus_bodies_get_a_documented_answer() {
    let samples = corpus();
    let count = samples.len();
    fuzz(
        "corpus_mutations",
        cases(),
        (0..count, prop::collection::vec(mutation(), 1..5), coding()),
        |(which, mutations, coding)| {
            let sample = &samples[which];
            let text = mutate(sample, &samples, &mutations);
            // What the bridge must read: a form carries the text, lossily made UTF-8.
            let (body, value, content_type, json) = if sample.form {
                let field = String::from_utf8_lossy(&text).into_owned();
                let body = form_urlencoded::Serializer::new(String::new())
                    .append_pair("sourceUpdate", &field)
                    .finish()
                    .into_bytes();
                let value = serde_json::from_str::<Value>(&field).ok();
                (body, value, FORM, field.into_bytes())
            } else {
                let value = serde_json::from_slice::<Value>(&text).ok();
                (text.clone(), value, "application/json", text)
            };
            // A key given twice (the DuplicateKey mutation, or a splice) is refused with 400
            // naming it: serde_json would keep the last, another reader the first.
            let twice = value.is_some()
                && matches!(
                    thryve_bridge::http::json::from_slice(&json),
                    Err(thryve_bridge::http::json::ReadError::Duplicate(_))
                );
            let (raw, encoding) = coding.apply(&body);
            let got = answer(&headers(encoding, Some(content_type)), &raw, 1 << 20)?;
            // Whatever still reads as one JSON object (any JSON, as a form field) must be a
            // delivery, unless it holds a NUL or, wrapped as a form, nests too deep.
            let must_store = match &value {
                _ if twice => false,
                Some(v) if sample.form => !has_nul(v) && depth(v) < MAX_DEPTH,
                Some(v) => v.is_object() && !has_nul(v),
                None => false,
            };
            if twice && value.as_ref().is_some_and(|v| v.is_object() || sample.form) {
                prop_assert_eq!(&got, &Err(400), "a key given twice");
            }
            if let (true, Err(status)) = (must_store, &got) {
                return Err(TestCaseError::fail(format!(
                    "{status} for a readable body: {}",
                    String::from_utf8_lossy(&body)
                )));
            }
            if let (Some(v), Ok(delivery)) = (&value, &got) {
                let stored = if sample.form {
                    json!({ "sourceUpdate": v })
                } else {
                    v.clone()
                };
                prop_assert_eq!(
                    delivery.payload.as_bytes(),
                    &thryve::canonical_json(&stored)[..]
                );
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// (c) Valid JSON trees of random shape.

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
        prop_oneof![
            Just("notification.data.epoch.createupdate"),
            Just("event.data.daily.update"),
            Just("2024-01-01"),
            Just("2024-01-01T00:00:00Z"),
            Just("unix"),
            Just("iso"),
        ]
        .prop_map(Value::from),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop_oneof![
            Just("type"), Just("endUserId"), Just("endUserAlias"), Just("timestampType"),
            Just("data"), Just("sourceUpdate"), Just("dataSourceId"), Just("dataTypeIds"),
            Just("startTimestamp"), Just("endTimestamp"), Just("startDay"), Just("endDay"),
            Just("timestamp"), Just("epochData"), Just("dailyData"), Just("dataTypeId"),
            Just("value"), Just("day"), Just("authenticationToken"), Just("dataSource"),
            Just("connectionStatus"), Just("createdAt"), Just("/v5/dailyDynamicValues"),
            Just("/v5/dynamicEpochValues"),
        ]
        .prop_map(str::to_owned),
        1 => ".{0,8}",
    ]
}

fn json_tree() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(8, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(json_key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn random_json_objects_are_always_a_delivery_unless_they_hold_a_nul() {
    let known_type = prop_oneof![
        Just(None),
        Just(Some("notification.data.epoch.createupdate")),
        Just(Some("notification.data.daily.createupdate")),
        Just(Some("notification.source.connect")),
        Just(Some("event.data.epoch.update")),
        Just(Some("event.data.daily.create")),
    ];
    fuzz(
        "random_trees",
        cases(),
        (
            prop::collection::btree_map(json_key(), json_tree(), 0..8),
            known_type,
            coding(),
        ),
        |(fields, known_type, coding)| {
            let mut object: Map<String, Value> = fields.into_iter().collect();
            if let Some(t) = known_type {
                object.insert("type".into(), Value::from(t));
            }
            // Compared as read back from its text: serde_json's default float parsing may
            // land one ulp off a value written from memory.
            let text = serde_json::to_vec(&Value::Object(object)).unwrap();
            let value: Value = serde_json::from_slice(&text).unwrap();
            let (raw, encoding) = coding.apply(&text);
            match answer(&headers(encoding, Some("application/json")), &raw, 1 << 20)? {
                Ok(delivery) => {
                    prop_assert!(!has_nul(&value));
                    let expected = thryve::canonical_json(&value);
                    prop_assert_eq!(delivery.payload.as_bytes(), &expected[..]);
                }
                Err(status) => prop_assert!(status == 400 && has_nul(&value), "{status}"),
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Memory: the shapes that cost the most heap per byte of body, filled up to the limit.

#[test]
fn heap_use_is_a_bounded_multiple_of_the_limit() {
    // Items of an array that fills the body, each followed by a comma.
    let shapes: [&[u8]; 7] = [
        b"{\"a\":0},",
        b"[],",
        b"0,",
        b"\"\",",
        b"{\"\":[]},",
        b"[[[[[[[[[[1]]]]]]]]]],",
        b"\"\\u00e9\\u00e9\",",
    ];
    let limit = 256 << 10;
    let mut worst = 0.0_f64;
    for item in shapes {
        let mut body = b"[".to_vec();
        while body.len() + item.len() < limit - 16 {
            body.extend_from_slice(item);
        }
        body.pop();
        body.extend_from_slice(b"]");
        let wrapped = [b"{\"x\":".as_slice(), &body, b"}"].concat();
        let (result, heap) = peak_bytes(|| parse_delivery(&HeaderMap::new(), &wrapped, limit));
        if let Err(e) = result {
            panic!("{}: {e}", String::from_utf8_lossy(item));
        }
        let factor = heap as f64 / limit as f64;
        println!(
            "heap for a {limit}-byte body of [{}...]: {heap} bytes ({factor:.1}x)",
            String::from_utf8_lossy(item)
        );
        worst = worst.max(factor);
        assert!(
            heap <= HEAP_PER_LIMIT_BYTE * limit + HEAP_CONSTANT,
            "{heap} heap bytes for {}",
            String::from_utf8_lossy(item)
        );
    }
    println!("worst heap use: {worst:.1}x the body limit");
}
