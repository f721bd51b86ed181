//! Webhook credentials: static ones (HTTP Basic, fixed headers) compared in constant time, and the HMAC signature.

use axum::http::{header::AUTHORIZATION, HeaderMap, HeaderName};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::hmac::{HmacError, HmacVerifier};
use crate::config::{ConfigError, Secret};

/// The credentials a delivery must present: any one of the static credentials (if any is
/// configured) and, if a secret is configured, a valid HMAC signature as well.
///
/// Static credentials are kept as SHA-256 digests and compared with [`subtle`], so neither the
/// position of the first wrong byte nor the length of a guess shows in the response time.
#[derive(Clone)]
pub struct Authenticator {
    basic: Vec<[u8; 32]>,
    headers: Vec<(HeaderName, [u8; 32])>,
    hmac: Option<HmacVerifier>,
}

impl Authenticator {
    /// Builds the checker from `WEBHOOK_BASIC_AUTH` / `WEBHOOK_AUTH_HEADER` and the HMAC
    /// settings; refuses a configuration with none of them unless `allow_unauthenticated`.
    pub fn from_config(
        basic: Option<&Secret>,
        header: Option<&Secret>,
        hmac: Option<HmacVerifier>,
        allow_unauthenticated: bool,
    ) -> Result<Self, ConfigError> {
        let basic = match basic {
            Some(list) => parse_basic(list.expose())?,
            None => Vec::new(),
        };
        let headers = match header {
            Some(list) => parse_headers(list.expose())?,
            None => Vec::new(),
        };
        if basic.is_empty() && headers.is_empty() && hmac.is_none() && !allow_unauthenticated {
            return Err(ConfigError::new(
                "WEBHOOK_BASIC_AUTH",
                "no webhook credential configured; set WEBHOOK_BASIC_AUTH=user:password (or \
                 WEBHOOK_AUTH_HEADER='Header-Name: value', or WEBHOOK_HMAC_SECRET), or \
                 WEBHOOK_ALLOW_UNAUTHENTICATED=true to accept anyone",
            ));
        }
        Ok(Self {
            basic,
            headers,
            hmac,
        })
    }

    /// Names of the enabled modes, for the start-up line (never the credentials).
    pub fn modes(&self) -> String {
        let mut modes = Vec::new();
        if !self.basic.is_empty() {
            modes.push(format!("basic({})", self.basic.len()));
        }
        for (name, _) in &self.headers {
            modes.push(format!("header({name})"));
        }
        if let Some(hmac) = &self.hmac {
            modes.push(format!("hmac({})", hmac.layout()));
        }
        if modes.is_empty() {
            "none (WEBHOOK_ALLOW_UNAUTHENTICATED)".to_owned()
        } else {
            modes.join(", ")
        }
    }

    /// True when the request carries one of the configured static credentials, or none is
    /// configured. Checked before the body is read.
    pub fn admits(&self, request: &HeaderMap) -> bool {
        if self.basic.is_empty() && self.headers.is_empty() {
            return true;
        }
        let mut ok = Choice::from(0);
        if !self.basic.is_empty() {
            if let Some(given) = request
                .get(AUTHORIZATION)
                .and_then(|v| basic_credentials(v.as_bytes()))
            {
                let given = digest(&given);
                for expected in &self.basic {
                    ok |= constant_time_eq(&given, expected);
                }
            }
        }
        for (name, expected) in &self.headers {
            for value in request.get_all(name) {
                ok |= constant_time_eq(&digest(value.as_bytes()), expected);
            }
        }
        ok.into()
    }

    /// Checks the HMAC signature over the raw body, if a secret is configured. Checked after the
    /// body is read and before it is decompressed, so an unsigned body is never inflated.
    pub fn verify_signature(
        &self,
        request: &HeaderMap,
        raw_body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), HmacError> {
        match &self.hmac {
            Some(hmac) => hmac.verify(request, raw_body, now),
            None => Ok(()),
        }
    }
}

/// The one comparison of secret-derived bytes; a test checks that `admits` goes through it.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> Choice {
    a.ct_eq(b)
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The decoded `user:password` of a `Basic` authorization header.
fn basic_credentials(header: &[u8]) -> Option<Vec<u8>> {
    let scheme = header.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    STANDARD.decode(header[6..].trim_ascii()).ok()
}

fn parse_basic(list: &str) -> Result<Vec<[u8; 32]>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(i, entry)| match entry.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(digest(entry.as_bytes())),
            _ => Err(ConfigError::new(
                "WEBHOOK_BASIC_AUTH",
                format!(
                    "entry {} is not user:password (both non-empty); expected user:password[,user2:password2]",
                    i + 1
                ),
            )),
        })
        .collect()
}

fn parse_headers(list: &str) -> Result<Vec<(HeaderName, [u8; 32])>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(i, entry)| {
            let bad = |why: &str| {
                ConfigError::new(
                    "WEBHOOK_AUTH_HEADER",
                    format!(
                        "entry {}: {why}; expected 'Header-Name: value[,Header-Name: value2]'",
                        i + 1
                    ),
                )
            };
            let (name, value) = entry.split_once(':').ok_or_else(|| bad("no ':'"))?;
            let name =
                HeaderName::try_from(name.trim()).map_err(|_| bad("not a valid header name"))?;
            let value = value.trim();
            if value.is_empty() {
                return Err(bad("empty value"));
            }
            Ok((name, digest(value.as_bytes())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::try_from(*k).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_pass))
    }

    #[test]
    fn any_of_several_basic_credentials_is_admitted() {
        let auth = Authenticator::from_config(
            Some(&Secret::new("thryve:old, thryve:new")),
            None,
            None,
            false,
        )
        .unwrap();
        assert!(auth.admits(&headers(&[("authorization", &basic("thryve:old"))])));
        assert!(auth.admits(&headers(&[("authorization", &basic("thryve:new"))])));
        assert!(!auth.admits(&headers(&[("authorization", &basic("thryve:nope"))])));
        assert!(!auth.admits(&headers(&[("authorization", "Bearer thryve:new")])));
        assert!(!auth.admits(&HeaderMap::new()));
    }

    #[test]
    fn fixed_header_credentials() {
        let auth = Authenticator::from_config(
            None,
            Some(&Secret::new("X-Api-Key: k1,Authorization: Bearer t")),
            None,
            false,
        )
        .unwrap();
        assert!(auth.admits(&headers(&[("x-api-key", "k1")])));
        assert!(auth.admits(&headers(&[("authorization", "Bearer t")])));
        assert!(!auth.admits(&headers(&[("x-api-key", "k2")])));
        assert_eq!(auth.modes(), "header(x-api-key), header(authorization)");
    }

    #[test]
    fn no_credentials_needs_explicit_opt_in() {
        let err = Authenticator::from_config(None, None, None, false)
            .err()
            .unwrap();
        assert!(err
            .to_string()
            .contains("WEBHOOK_ALLOW_UNAUTHENTICATED=true"));
        assert!(Authenticator::from_config(None, None, None, true)
            .unwrap()
            .admits(&HeaderMap::new()));
    }

    #[test]
    fn an_hmac_secret_alone_is_a_credential() {
        let hmac = HmacVerifier::new(
            Secret::new("k"),
            crate::http::hmac::Layout::BodyTimestamp,
            300,
        )
        .unwrap();
        let auth = Authenticator::from_config(None, None, Some(hmac), false).unwrap();
        assert_eq!(auth.modes(), "hmac(body+timestamp)");
        assert!(auth.admits(&HeaderMap::new()));
        assert!(auth
            .verify_signature(&HeaderMap::new(), b"{}", Utc::now())
            .is_err());
    }

    #[test]
    fn malformed_settings_name_the_variable_without_the_secret() {
        let err = Authenticator::from_config(
            Some(&Secret::new("user-without-password-hunter2")),
            None,
            None,
            false,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.starts_with("WEBHOOK_BASIC_AUTH: entry 1"), "{err}");
        assert!(!err.contains("hunter2"));
        let err =
            Authenticator::from_config(None, Some(&Secret::new("bad header: v")), None, false)
                .err()
                .unwrap();
        assert!(err
            .to_string()
            .starts_with("WEBHOOK_AUTH_HEADER: entry 1: not a valid header name"));
    }
}
