//! Undoes `content-encoding` (zstd, gzip, deflate), also where the outermost frame arrives as
//! base64 text (Thryve's data pushes), with the size limit enforced at every stage.

use std::{
    cell::RefCell,
    io::{self, Read},
};

use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine as _,
};
use zstd::zstd_safe::{DCtx, ResetDirective};

/// Why a body could not be decoded; each maps onto one HTTP status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("content-encoding {0:?} is not supported; send zstd, gzip, deflate or identity")]
    UnsupportedEncoding(String),
    #[error("content-encoding lists {0} codings; at most {MAX_CODINGS} are undone")]
    TooManyCodings(usize),
    #[error("decompressed body is larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error("{} is not valid {encoding}: {detail}", if *.base64 { "the base64-decoded body" } else { "body" })]
    Corrupt {
        encoding: &'static str,
        /// The frame came as base64 text, which was undone first.
        base64: bool,
        detail: String,
    },
    #[error(
        "body is neither a {encoding} frame nor base64 text of one: byte 0x{byte:02x} at offset \
         {offset} is outside the base64 alphabet"
    )]
    NotBase64 {
        encoding: &'static str,
        offset: usize,
        byte: u8,
    },
    #[error("body is base64 text but does not decode: {detail}")]
    BadBase64 { detail: String },
    #[error(
        "body is base64 text, but what it decodes to is not a {encoding} frame (it starts \
         {start})"
    )]
    Base64NotFrame {
        encoding: &'static str,
        start: String,
    },
}

/// How the outermost coding arrived on the wire: the frame itself, or base64 text of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireForm {
    /// No content coding: the body is the content.
    Plain,
    /// The compressed frame as bytes.
    Frame,
    /// Base64 text of the frame (what Thryve sends for a data push).
    Base64,
}

impl WireForm {
    /// The `form` label of the body-forms metric and log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            WireForm::Plain => "plain",
            WireForm::Frame => "frame",
            WireForm::Base64 => "base64",
        }
    }
}

/// A body in each of the forms it passed through: what the sender may have signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub form: WireForm,
    /// The frame after undoing base64; `None` when the wire bytes were the frame (or plain).
    pub unwrapped: Option<Vec<u8>>,
    /// The content after every coding is undone.
    pub content: Vec<u8>,
}

impl Decoded {
    /// The outermost frame: base64-decoded where it came as base64, else the wire bytes.
    pub fn frame<'a>(&'a self, wire: &'a [u8]) -> &'a [u8] {
        self.unwrapped.as_deref().unwrap_or(wire)
    }
}

/// Largest zstd window accepted (8 MiB): a frame may ask for up to 2 GiB of window memory,
/// and no honest webhook body needs more than a few MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

thread_local! {
    /// One zstd decompression context per thread, reset before each body: making a context
    /// (and its window buffer) costs more than decoding a typical data push.
    static ZSTD: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
}

/// Most codings undone for one body. Each pass may inflate up to the limit, so a list of a
/// hundred would cost a hundred passes; no sender stacks more than one or two.
pub const MAX_CODINGS: usize = 3;

/// Standard alphabet, padding optional (Java's encoder pads; a proxy or a future sender may
/// not), strict otherwise: bad padding or stray bits are refused, not guessed at.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes `body` as described by a `content-encoding` header value (`None` = identity),
/// never holding more than `limit + 1` decoded bytes. The outermost frame may come as base64
/// text (see [`decode`]).
///
/// ```
/// use thryve_bridge::http::decode::decode_body;
/// let packed = zstd::encode_all(&b"{\"a\":1}"[..], 3).unwrap();
/// assert_eq!(decode_body(Some("zstd"), &packed, 1024).unwrap(), b"{\"a\":1}");
/// ```
pub fn decode_body(
    encoding: Option<&str>,
    body: &[u8],
    limit: usize,
) -> Result<Vec<u8>, DecodeError> {
    decode(encoding, body, limit).map(|decoded| decoded.content)
}

/// Decodes `body`, keeping each form it passed through.
///
/// Which form the outermost coding came in is decided from the bytes: a body that starts
/// like a frame of the named coding is one; otherwise it must be base64 text (line breaks and
/// spaces allowed, padding optional) whose decoding starts like such a frame, and anything
/// else is refused saying which step failed. Every stage stays within `limit`: the wire body
/// (checked here too), its base64 decoding (three quarters of it at most) and each inflation.
///
/// ```
/// use base64::Engine as _;
/// use thryve_bridge::http::decode::{decode, WireForm};
/// let frame = zstd::encode_all(&b"{\"a\":1}"[..], 3).unwrap();
/// let wire = base64::engine::general_purpose::STANDARD.encode(&frame);
/// let decoded = decode(Some("zstd"), wire.as_bytes(), 1024).unwrap();
/// assert_eq!(decoded.form, WireForm::Base64);
/// assert_eq!(decoded.frame(wire.as_bytes()), &frame[..]);
/// assert_eq!(decoded.content, b"{\"a\":1}");
/// ```
pub fn decode(encoding: Option<&str>, body: &[u8], limit: usize) -> Result<Decoded, DecodeError> {
    let codings = codings(encoding)?;
    if body.len() > limit {
        return Err(DecodeError::TooLarge(limit));
    }
    // Codings are listed in the order they were applied: undo them last first.
    let mut pending = codings.iter().rev();
    let Some(&outer) = pending.next() else {
        return Ok(Decoded {
            form: WireForm::Plain,
            unwrapped: None,
            content: body.to_vec(),
        });
    };
    let (form, unwrapped, mut content) = if outer.starts_frame(body) {
        (WireForm::Frame, None, outer.undo(body, limit, false)?)
    } else {
        match unbase64(body) {
            Ok(frame) if outer.starts_frame(&frame) => {
                let content = outer.undo(&frame, limit, true)?;
                (WireForm::Base64, Some(frame), content)
            }
            Ok(frame) => {
                return Err(DecodeError::Base64NotFrame {
                    encoding: outer.name(),
                    start: first_bytes(&frame),
                })
            }
            // Raw deflate has no header to recognise it by: bytes that are no base64 text
            // are tried as such, as before base64 bodies were known.
            Err(Unbase64::Outside { .. }) if outer == Coding::Deflate => {
                (WireForm::Frame, None, outer.undo(body, limit, false)?)
            }
            Err(Unbase64::Outside { offset, byte }) => {
                return Err(DecodeError::NotBase64 {
                    encoding: outer.name(),
                    offset,
                    byte,
                })
            }
            Err(Unbase64::Empty) => {
                return Err(DecodeError::Corrupt {
                    encoding: outer.name(),
                    base64: false,
                    detail: "body is empty".to_owned(),
                })
            }
            Err(Unbase64::Invalid(detail)) => return Err(DecodeError::BadBase64 { detail }),
        }
    };
    for coding in pending {
        content = coding.undo(&content, limit, false)?;
    }
    Ok(Decoded {
        form,
        unwrapped,
        content,
    })
}

/// One content coding the decoder undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Zstd,
    Gzip,
    Deflate,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }

    /// Whether `data` begins the way a frame of this coding must.
    fn starts_frame(self, data: &[u8]) -> bool {
        match self {
            // A zstd frame, or a skippable frame (magic 0x184D2A5?, little-endian).
            Coding::Zstd => {
                matches!(
                    data,
                    [0x28, 0xb5, 0x2f, 0xfd, ..] | [0x50..=0x5f, 0x2a, 0x4d, 0x18, ..]
                )
            }
            Coding::Gzip => data.starts_with(&[0x1f, 0x8b]),
            Coding::Deflate => is_zlib(data),
        }
    }

    fn undo(self, data: &[u8], limit: usize, base64: bool) -> Result<Vec<u8>, DecodeError> {
        let name = self.name();
        match self {
            Coding::Zstd => ZSTD.with_borrow_mut(|context| {
                // A body cut short leaves its frame half-read in the context: start afresh.
                context.reset(ResetDirective::SessionOnly).map_err(|code| {
                    corrupt(name, base64)(io::Error::other(zstd::zstd_safe::get_error_name(code)))
                })?;
                let mut decoder = zstd::stream::read::Decoder::with_context(data, context);
                decoder
                    .window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(corrupt(name, base64))?;
                read_limited(decoder, limit, name, base64)
            }),
            Coding::Gzip => {
                read_limited(flate2::read::MultiGzDecoder::new(data), limit, name, base64)
            }
            Coding::Deflate if is_zlib(data) => {
                read_limited(flate2::read::ZlibDecoder::new(data), limit, name, base64)
            }
            // Some senders put raw deflate under "deflate"; HTTP says zlib, so that comes first.
            Coding::Deflate => {
                read_limited(flate2::read::DeflateDecoder::new(data), limit, name, base64)
            }
        }
    }
}

/// The codings a `content-encoding` value names, in the order they were applied; identity
/// and blanks dropped.
fn codings(encoding: Option<&str>) -> Result<Vec<Coding>, DecodeError> {
    let names: Vec<String> = encoding
        .unwrap_or("")
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    let codings = names
        .iter()
        .map(|name| match name.as_str() {
            "zstd" => Ok(Coding::Zstd),
            "gzip" | "x-gzip" => Ok(Coding::Gzip),
            "deflate" => Ok(Coding::Deflate),
            unknown => Err(DecodeError::UnsupportedEncoding(cut(unknown))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if codings.len() > MAX_CODINGS {
        return Err(DecodeError::TooManyCodings(codings.len()));
    }
    Ok(codings)
}

/// Why a body is not base64 text.
enum Unbase64 {
    /// A byte that no base64 text holds: the body is something else.
    Outside { offset: usize, byte: u8 },
    /// Nothing but white space.
    Empty,
    /// Base64 characters that do not decode (bad padding, impossible length).
    Invalid(String),
}

/// The bytes that base64 text `body` stands for. Line breaks, spaces and tabs anywhere are
/// skipped (MIME-style wrapped text), padding is optional.
fn unbase64(body: &[u8]) -> Result<Vec<u8>, Unbase64> {
    let is_space = |b: &u8| matches!(b, b'\r' | b'\n' | b' ' | b'\t');
    if let Some(offset) = body.iter().position(|b| {
        !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') || is_space(b))
    }) {
        return Err(Unbase64::Outside {
            offset,
            byte: body[offset],
        });
    }
    // Copy only when there is white space to drop.
    let compact: std::borrow::Cow<[u8]> = if body.iter().any(is_space) {
        body.iter().copied().filter(|b| !is_space(b)).collect()
    } else {
        body.into()
    };
    if compact.is_empty() {
        return Err(Unbase64::Empty);
    }
    BASE64
        .decode(&compact)
        .map_err(|e| Unbase64::Invalid(e.to_string()))
}

/// Up to the first eight bytes of `data` in hex, for an error that says what came instead.
fn first_bytes(data: &[u8]) -> String {
    if data.is_empty() {
        return "with nothing".to_owned();
    }
    let shown = &data[..data.len().min(8)];
    format!("0x{}", hex::encode(shown))
}

/// A coding name as echoed in an error: at most 64 bytes, so a giant header is not repeated.
fn cut(text: &str) -> String {
    text[..text.floor_char_boundary(64)].to_owned()
}

fn is_zlib(data: &[u8]) -> bool {
    matches!(data, [cmf, flg, ..] if cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0)
}

fn corrupt(encoding: &'static str, base64: bool) -> impl Fn(io::Error) -> DecodeError {
    move |e| DecodeError::Corrupt {
        encoding,
        base64,
        detail: e.to_string(),
    }
}

fn read_limited(
    reader: impl Read,
    limit: usize,
    encoding: &'static str,
    base64: bool,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(corrupt(encoding, base64))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge(limit));
    }
    Ok(out)
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn identity_gzip_zstd_deflate_round_trip() {
        let body = br#"{"hello":"world"}"#;
        assert_eq!(decode_body(None, body, 100).unwrap(), body);
        assert_eq!(decode_body(Some("identity"), body, 100).unwrap(), body);
        assert_eq!(decode_body(Some("gzip"), &gzip(body), 100).unwrap(), body);
        assert_eq!(
            decode_body(Some("ZSTD"), &zstd::encode_all(&body[..], 3).unwrap(), 100).unwrap(),
            body
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(body).unwrap();
        assert_eq!(
            decode_body(Some("deflate"), &z.finish().unwrap(), 100).unwrap(),
            body
        );
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(body).unwrap();
        assert_eq!(
            decode_body(Some("deflate"), &raw.finish().unwrap(), 100).unwrap(),
            body
        );
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = zstd::encode_all(&vec![b'a'; 64 * 1024 * 1024][..], 19).unwrap();
        assert!(bomb.len() < 64 * 1024);
        assert_eq!(
            decode_body(Some("zstd"), &bomb, 1 << 20),
            Err(DecodeError::TooLarge(1 << 20))
        );
        assert_eq!(
            decode_body(Some("gzip"), &gzip(&vec![0; 8 << 20]), 1 << 20),
            Err(DecodeError::TooLarge(1 << 20))
        );
    }

    #[test]
    fn a_body_cut_short_leaves_nothing_behind_for_the_next_on_the_thread() {
        let whole = zstd::encode_all(&br#"{"first":true}"#[..], 3).unwrap();
        let cut = &whole[..whole.len() / 2];
        assert!(decode_body(Some("zstd"), cut, 1024).is_err());
        let next = zstd::encode_all(&br#"{"second":true}"#[..], 3).unwrap();
        assert_eq!(
            decode_body(Some("zstd"), &next, 1024).unwrap(),
            br#"{"second":true}"#
        );
        // And a bomb refused at the limit mid-frame does not spill into the next body either.
        let bomb = zstd::encode_all(&vec![b'a'; 100_000][..], 3).unwrap();
        assert_eq!(
            decode_body(Some("zstd"), &bomb, 1024),
            Err(DecodeError::TooLarge(1024))
        );
        assert_eq!(
            decode_body(Some("zstd"), &next, 1024).unwrap(),
            br#"{"second":true}"#
        );
    }

    #[test]
    fn corrupt_and_unknown_encodings() {
        // A frame's magic followed by garbage is a corrupt frame.
        assert!(matches!(
            decode_body(Some("zstd"), b"\x28\xb5\x2f\xfdnot zstd at all", 100),
            Err(DecodeError::Corrupt {
                encoding: "zstd",
                base64: false,
                ..
            })
        ));
        assert_eq!(
            decode_body(Some("br"), b"x", 100),
            Err(DecodeError::UnsupportedEncoding("br".into()))
        );
        let long = "x".repeat(10_000);
        assert_eq!(
            decode_body(Some(&long), b"x", 100),
            Err(DecodeError::UnsupportedEncoding("x".repeat(64)))
        );
    }

    #[test]
    fn a_long_list_of_codings_is_refused_before_any_is_undone() {
        let list = vec!["gzip"; 100].join(", ");
        assert_eq!(
            decode_body(Some(&list), b"not even gzip", 100),
            Err(DecodeError::TooManyCodings(100))
        );
        let twice = gzip(&gzip(b"{}"));
        assert_eq!(decode_body(Some("gzip, gzip"), &twice, 100).unwrap(), b"{}");
    }

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    /// `text` broken into lines of `width` characters with CRLF, as MIME encoders do.
    fn wrapped(text: &str, width: usize) -> String {
        text.as_bytes()
            .chunks(width)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    #[test]
    fn the_outer_frame_may_come_as_base64_text_in_every_spelling() {
        let json = br#"{"endUserId":"u","data":[1,2,3]}"#;
        let zstd_frame = zstd::encode_all(&json[..], 3).unwrap();
        let gzip_frame = gzip(json);
        let padded = b64(&zstd_frame);
        assert!(padded.ends_with('='), "the sample must need padding");
        let cases: Vec<(&str, Vec<u8>, WireForm)> = vec![
            ("zstd", padded.clone().into_bytes(), WireForm::Base64),
            (
                "zstd",
                padded.trim_end_matches('=').into(),
                WireForm::Base64,
            ),
            ("zstd", wrapped(&padded, 76).into_bytes(), WireForm::Base64),
            ("zstd", format!("{padded}\n").into_bytes(), WireForm::Base64),
            ("zstd", zstd_frame.clone(), WireForm::Frame),
            ("gzip", b64(&gzip_frame).into_bytes(), WireForm::Base64),
            ("x-gzip", gzip_frame.clone(), WireForm::Frame),
        ];
        for (coding, wire, form) in cases {
            let decoded = decode(Some(coding), &wire, 1024).unwrap();
            assert_eq!(decoded.content, json, "{coding} {form:?}");
            assert_eq!(decoded.form, form, "{coding}");
            let frame = if coding == "zstd" {
                &zstd_frame
            } else {
                &gzip_frame
            };
            assert_eq!(decoded.frame(&wire), &frame[..], "{coding} {form:?}");
        }
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(json).unwrap();
        let zlib = zlib.finish().unwrap();
        assert_eq!(
            decode_body(Some("deflate"), b64(&zlib).as_bytes(), 1024).unwrap(),
            json
        );
    }

    #[test]
    fn each_failing_step_is_named() {
        let frame = zstd::encode_all(&b"{}"[..], 3).unwrap();
        let text = b64(&frame);
        // Not base64 at all (a JSON body under content-encoding: zstd).
        assert_eq!(
            decode_body(Some("zstd"), b"{\"a\":1}", 100),
            Err(DecodeError::NotBase64 {
                encoding: "zstd",
                offset: 0,
                byte: b'{'
            })
        );
        // Base64 text with a bad character in the middle.
        let mut bad = text.clone().into_bytes();
        bad[4] = b'*';
        assert!(matches!(
            decode_body(Some("zstd"), &bad, 100),
            Err(DecodeError::NotBase64 {
                offset: 4,
                byte: b'*',
                ..
            })
        ));
        // Bad padding, an impossible length.
        for broken in [format!("{text}=="), format!("{text}A"), "A===".to_owned()] {
            let error = decode_body(Some("zstd"), broken.as_bytes(), 100).unwrap_err();
            assert!(
                matches!(error, DecodeError::BadBase64 { .. }),
                "{broken}: {error}"
            );
            assert!(error
                .to_string()
                .starts_with("body is base64 text but does not decode"));
        }
        // Base64 of something that is no frame, and base64 of base64.
        assert_eq!(
            decode_body(Some("zstd"), b64(b"{\"a\":1}").as_bytes(), 100),
            Err(DecodeError::Base64NotFrame {
                encoding: "zstd",
                start: "0x7b2261223a317d".to_owned()
            })
        );
        assert!(matches!(
            decode_body(Some("zstd"), b64(text.as_bytes()).as_bytes(), 100),
            Err(DecodeError::Base64NotFrame {
                encoding: "zstd",
                ..
            })
        ));
        // Base64 of a frame cut short: the decompressor's step is named, after base64.
        let truncated = b64(&frame[..frame.len() - 3]);
        let error = decode_body(Some("zstd"), truncated.as_bytes(), 100).unwrap_err();
        assert!(
            matches!(
                error,
                DecodeError::Corrupt {
                    encoding: "zstd",
                    base64: true,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error
            .to_string()
            .starts_with("the base64-decoded body is not valid zstd"));
        // Empty or blank.
        for blank in [&b""[..], b"\r\n"] {
            assert!(matches!(
                decode_body(Some("zstd"), blank, 100),
                Err(DecodeError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn a_bomb_wrapped_in_base64_stops_at_the_limit() {
        let bomb = zstd::encode_all(&vec![b'a'; 64 * 1024 * 1024][..], 19).unwrap();
        let wire = b64(&bomb);
        assert!(wire.len() < 64 * 1024);
        assert_eq!(
            decode_body(Some("zstd"), wire.as_bytes(), 1 << 20),
            Err(DecodeError::TooLarge(1 << 20))
        );
        // The wire limit holds for base64 text as for a frame.
        assert_eq!(
            decode_body(Some("zstd"), wire.as_bytes(), wire.len() - 1),
            Err(DecodeError::TooLarge(wire.len() - 1))
        );
    }
}
