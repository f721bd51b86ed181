//! `hmac check`: finds the WEBHOOK_HMAC_LAYOUT of a captured delivery (JSON out).

use std::path::PathBuf;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use clap::Subcommand;

use super::common::CliError;
use crate::{
    config::Secret,
    http::{self, hmac},
};

#[derive(Debug, Subcommand)]
pub enum HmacCommand {
    /// Find the WEBHOOK_HMAC_LAYOUT of a captured delivery, given as it came over the wire:
    /// decodes the body as its headers say (base64 text of a zstd frame included), tries every
    /// layout over every form of it, prints {"form":..,"matches":[...],"setting":..,"tried":[...]},
    /// exits 1 if none matches.
    Check {
        /// File holding the body exactly as received (for a data push: the base64 text).
        #[arg(long)]
        body: PathBuf,
        /// File holding the request's header lines, `Name: value` each (as `curl -D` or a
        /// proxy's log writes them; a request or status line is skipped).
        #[arg(long)]
        headers: Option<PathBuf>,
        /// One header line, `Name: value`; may be repeated, and adds to --headers.
        #[arg(long)]
        header: Vec<String>,
        /// The delivery's x-hmac-timestamp header (else taken from the headers).
        #[arg(long)]
        timestamp: Option<String>,
        /// The delivery's x-hmac-signature header, hex (else taken from the headers).
        #[arg(long)]
        signature: Option<String>,
        /// The HMAC secret; prefer the variable, as `ps` shows command lines.
        #[arg(long, env = "WEBHOOK_HMAC_SECRET", hide_env_values = true)]
        secret: Secret,
    },
}

/// Header lines as `curl -D` or a proxy log writes them: `Name: value`, anything else skipped.
fn header_map(lines: impl IntoIterator<Item = String>) -> Result<HeaderMap, CliError> {
    let mut map = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let bad =
            |e: &dyn std::fmt::Display| CliError::Failed(format!("header line {line:?}: {e}"));
        let name = HeaderName::try_from(name.trim()).map_err(|e| bad(&e))?;
        let value = HeaderValue::try_from(value.trim()).map_err(|e| bad(&e))?;
        map.append(name, value);
    }
    Ok(map)
}

async fn check(
    body: &std::path::Path,
    headers_file: Option<&std::path::Path>,
    header_lines: &[String],
    timestamp: Option<String>,
    signature: Option<String>,
    secret: &Secret,
) -> Result<(), CliError> {
    let raw = tokio::fs::read(body)
        .await
        .map_err(CliError::file(format!("--body {}", body.display())))?;
    let mut lines = Vec::new();
    if let Some(file) = headers_file {
        let text = tokio::fs::read_to_string(file)
            .await
            .map_err(CliError::file(format!("--headers {}", file.display())))?;
        lines.extend(text.lines().map(str::to_owned));
    }
    lines.extend(header_lines.iter().cloned());
    let headers = header_map(lines)?;
    let from_headers = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let timestamp = timestamp
        .or_else(|| from_headers(hmac::TIMESTAMP_HEADER))
        .ok_or("no timestamp: pass --timestamp or an x-hmac-timestamp header line")?;
    let signature = signature
        .or_else(|| from_headers(hmac::SIGNATURE_HEADER))
        .ok_or("no signature: pass --signature or an x-hmac-signature header line")?;
    let signature = hmac::decode_signature(signature.as_bytes())
        .map_err(|e| CliError::Failed(format!("signature: {e}")))?;
    // The body as the server would see it, under a generous limit: this is an operator's file.
    let decoded = http::decode_delivery(&headers, &raw, 1 << 30);
    let forms = match &decoded {
        Ok(decoded) => hmac::Forms {
            wire: &raw,
            frame: Some(decoded.frame(&raw)),
            json: Some(&decoded.content),
        },
        Err(_) => hmac::Forms {
            wire: &raw,
            frame: None,
            json: None,
        },
    };
    // While the secret rotates the variable holds two; a layout matches under either.
    let mut matches: Vec<hmac::Layout> = hmac::secret_list(secret.expose())
        .flat_map(|secret| {
            hmac::matching_layouts(secret.as_bytes(), forms, timestamp.as_bytes(), &signature)
        })
        .collect();
    matches.sort_by_key(|layout| hmac::Layout::ALL.iter().position(|l| l == layout));
    matches.dedup();
    let names = |layouts: &[hmac::Layout]| layouts.iter().map(|l| l.as_str()).collect::<Vec<_>>();
    // Several matches mean the forms were the same bytes (a plain JSON notification): any of
    // them holds for such bodies, and a data push tells which holds for all.
    let setting = match &matches[..] {
        [only] => Some(format!("WEBHOOK_HMAC_LAYOUT={only}")),
        _ => None,
    };
    println!(
        "{}",
        serde_json::json!({
            "form": decoded.as_ref().map(|d| d.form.as_str()).ok(),
            "decode_error": decoded.as_ref().err().map(|e| e.to_string()),
            "matches": names(&matches),
            "setting": setting,
            "tried": names(&hmac::Layout::ALL),
        })
    );
    if matches.is_empty() {
        Err(
            "no layout matches: check the secret, and that the body file holds the bytes as \
             received (for a data push, the base64 text) with its content-encoding header"
                .into(),
        )
    } else {
        Ok(())
    }
}

pub(super) async fn run(command: HmacCommand) -> Result<(), CliError> {
    match command {
        HmacCommand::Check {
            body,
            headers,
            header,
            timestamp,
            signature,
            secret,
        } => {
            check(
                &body,
                headers.as_deref(),
                &header,
                timestamp,
                signature,
                &secret,
            )
            .await
        }
    }
}
