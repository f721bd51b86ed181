//! Undoes `content-encoding` (zstd, gzip, deflate) with the size limit enforced while inflating.

use std::{
    cell::RefCell,
    io::{self, Read},
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
    #[error("body is not valid {encoding}: {detail}")]
    Corrupt {
        encoding: &'static str,
        detail: String,
    },
}

/// Largest zstd window accepted (8 MiB): a frame may ask for up to 2 GiB of window memory,
/// and no honest webhook body needs more than a few MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

thread_local! {
    /// One zstd decompression context per thread, reset before each body: making a context
    /// (and its window buffer) cost more than decoding a typical data push (perf: 4.5% of the
    /// receiver's CPU went to `ZSTD_createDCtx`).
    static ZSTD: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
}

/// Most codings undone for one body. Each pass may inflate up to the limit, so a list of a
/// hundred would cost a hundred passes; no sender stacks more than one or two.
pub const MAX_CODINGS: usize = 3;

/// Decodes `body` as described by a `content-encoding` header value (`None` = identity),
/// never holding more than `limit + 1` decoded bytes.
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
    let codings: Vec<String> = encoding
        .unwrap_or("")
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if let Some(unknown) = codings
        .iter()
        .find(|c| !matches!(c.as_str(), "zstd" | "gzip" | "x-gzip" | "deflate"))
    {
        return Err(DecodeError::UnsupportedEncoding(cut(unknown)));
    }
    if codings.len() > MAX_CODINGS {
        return Err(DecodeError::TooManyCodings(codings.len()));
    }
    if body.len() > limit {
        return Err(DecodeError::TooLarge(limit));
    }
    let mut data = body.to_vec();
    // Codings are listed in the order they were applied: undo them last first.
    for coding in codings.iter().rev() {
        data = match coding.as_str() {
            "zstd" => ZSTD.with_borrow_mut(|context| {
                // A body cut short leaves its frame half-read in the context: start afresh.
                context
                    .reset(ResetDirective::SessionOnly)
                    .map_err(zstd_error)?;
                let mut decoder = zstd::stream::read::Decoder::with_context(&data[..], context);
                decoder
                    .window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(corrupt("zstd"))?;
                read_limited(decoder, limit, "zstd")
            })?,
            "gzip" | "x-gzip" => {
                read_limited(flate2::read::MultiGzDecoder::new(&data[..]), limit, "gzip")?
            }
            _ if is_zlib(&data) => {
                read_limited(flate2::read::ZlibDecoder::new(&data[..]), limit, "deflate")?
            }
            // Some senders put raw deflate under "deflate"; HTTP says zlib, so try that first.
            _ => read_limited(
                flate2::read::DeflateDecoder::new(&data[..]),
                limit,
                "deflate",
            )?,
        };
    }
    Ok(data)
}

/// A coding name as echoed in an error: at most 64 bytes, so a giant header is not repeated.
fn cut(text: &str) -> String {
    text[..text.floor_char_boundary(64)].to_owned()
}

fn is_zlib(data: &[u8]) -> bool {
    matches!(data, [cmf, flg, ..] if cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0)
}

fn corrupt(encoding: &'static str) -> impl Fn(io::Error) -> DecodeError {
    move |e| DecodeError::Corrupt {
        encoding,
        detail: e.to_string(),
    }
}

fn zstd_error(code: usize) -> DecodeError {
    corrupt("zstd")(io::Error::other(zstd::zstd_safe::get_error_name(code)))
}

fn read_limited(
    reader: impl Read,
    limit: usize,
    encoding: &'static str,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(corrupt(encoding))?;
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
        assert!(matches!(
            decode_body(Some("zstd"), b"not zstd at all", 100),
            Err(DecodeError::Corrupt {
                encoding: "zstd",
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
}
