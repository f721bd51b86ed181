//! Webhook credentials: static ones (HTTP Basic, fixed headers) compared in constant time, and the HMAC signature.

use axum::http::{header::AUTHORIZATION, HeaderMap, HeaderName};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::{
    headers::{single_header, RepeatedHeader},
    hmac::{Check, Forms, HmacVerifier},
};
use crate::config::{self, ConfigError, ReceiverConfig, Secret};

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
    /// The receiver's checker, from its `WEBHOOK_*` settings.
    pub fn from_config(config: &ReceiverConfig) -> Result<Self, ConfigError> {
        Self::new(
            config.webhook_basic_auth.as_ref(),
            config.webhook_auth_header.as_ref(),
            HmacVerifier::from_config(config)?,
            config.webhook_allow_unauthenticated,
        )
    }

    /// Builds the checker from `WEBHOOK_BASIC_AUTH` / `WEBHOOK_AUTH_HEADER` and the HMAC
    /// settings, with the checks of [`config`]: refuses a malformed entry, and a configuration
    /// with no credential unless `allow_unauthenticated`.
    pub fn new(
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
        config::require_credential(
            !basic.is_empty() || !headers.is_empty() || hmac.is_some(),
            allow_unauthenticated,
        )?;
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
            modes.push(format!(
                "hmac({}, {})",
                hmac.setting(),
                hmac.mode().as_str()
            ));
        }
        if modes.is_empty() {
            "none (WEBHOOK_ALLOW_UNAUTHENTICATED)".to_owned()
        } else {
            modes.join(", ")
        }
    }

    /// True when the request carries one of the configured static credentials, or none is
    /// configured. Checked before the body is read.
    ///
    /// A credential header sent more than once is refused: which copy would count is a
    /// guess, and a proxy may have added or kept one. Otherwise every configured credential is
    /// compared exactly once, whether the request brought that header or not, so the time
    /// taken tells nothing about which (or whether any) credential matched.
    pub fn admits(&self, request: &HeaderMap) -> bool {
        if self.basic.is_empty() && self.headers.is_empty() {
            return true;
        }
        let basic = if self.basic.is_empty() {
            None
        } else {
            match single_header(request, &AUTHORIZATION) {
                Ok(value) => value
                    .and_then(|v| basic_credentials(v.as_bytes()))
                    .map(|given| digest(&given)),
                Err(RepeatedHeader) => return false,
            }
        };
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, _) in &self.headers {
            match single_header(request, name) {
                Ok(value) => headers.push(value.map(|v| digest(v.as_bytes()))),
                Err(RepeatedHeader) => return false,
            }
        }
        let mut ok = Choice::from(0);
        for expected in &self.basic {
            ok |= presented(basic.as_ref(), expected);
        }
        for ((_, expected), given) in self.headers.iter().zip(&headers) {
            ok |= presented(given.as_ref(), expected);
        }
        ok.into()
    }

    /// The HMAC signature check, if a secret is configured.
    pub fn hmac(&self) -> Option<&HmacVerifier> {
        self.hmac.as_ref()
    }

    /// Checks the HMAC signature over the forms of the body, if a secret is configured.
    pub fn check_signature(
        &self,
        request: &HeaderMap,
        forms: Forms<'_>,
        now: DateTime<Utc>,
    ) -> Option<Check> {
        self.hmac
            .as_ref()
            .map(|hmac| hmac.check(request, forms, now))
    }
}

#[cfg(test)]
thread_local! {
    /// Calls of [`constant_time_eq`] on this thread, so a test can see that `admits` uses it.
    static COMPARISONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The one comparison of secret-derived bytes; a test checks that `admits` goes through it.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> Choice {
    #[cfg(test)]
    COMPARISONS.with(|n| n.set(n.get() + 1));
    a.ct_eq(b)
}

/// Whether `given` (absent when the request lacks the header) is `expected`, compared even
/// when absent so that every configured credential costs the same.
fn presented(given: Option<&[u8; 32]>, expected: &[u8; 32]) -> Choice {
    let present = Choice::from(u8::from(given.is_some()));
    constant_time_eq(given.unwrap_or(&[0; 32]), expected) & present
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
    Ok(config::basic_credentials(list)?
        .into_iter()
        .map(|entry| digest(entry.as_bytes()))
        .collect())
}

fn parse_headers(list: &str) -> Result<Vec<(HeaderName, [u8; 32])>, ConfigError> {
    Ok(config::header_credentials(list)?
        .into_iter()
        .map(|(name, value)| (name, digest(value.as_bytes())))
        .collect())
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
        let auth = Authenticator::new(
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
        let auth = Authenticator::new(
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

    /// Runs `admits` and counts the constant-time comparisons it made on this thread.
    fn counted(auth: &Authenticator, request: &HeaderMap) -> (bool, usize) {
        COMPARISONS.with(|n| n.set(0));
        let admitted = auth.admits(request);
        (admitted, COMPARISONS.with(|n| n.get()))
    }

    #[test]
    fn every_configured_credential_is_compared_once_in_constant_time_whatever_the_request() {
        let auth = Authenticator::new(
            Some(&Secret::new("thryve:one,thryve:two,thryve:three")),
            None,
            None,
            false,
        )
        .unwrap();
        for (request, admitted) in [
            (basic("thryve:one"), true),
            (basic("thryve:three"), true),
            (basic("thryve:thre"), false),
            (basic("thryve:three!"), false),
            (basic("other:one"), false),
            ("Basic !!not-base64".to_owned(), false),
        ] {
            assert_eq!(
                counted(&auth, &headers(&[("authorization", &request)])),
                (admitted, 3),
                "{request}"
            );
        }
        assert_eq!(counted(&auth, &HeaderMap::new()), (false, 3));

        let both = Authenticator::new(
            Some(&Secret::new("thryve:one,thryve:two,thryve:three")),
            Some(&Secret::new("X-Api-Key: k1,X-Api-Key: k2")),
            None,
            false,
        )
        .unwrap();
        assert_eq!(counted(&both, &headers(&[("x-api-key", "k2")])), (true, 5));
        assert_eq!(counted(&both, &headers(&[("x-api-key", "k3")])), (false, 5));
        assert_eq!(
            counted(&both, &headers(&[("authorization", &basic("thryve:two"))])),
            (true, 5)
        );
    }

    #[test]
    fn a_repeated_credential_header_is_refused_even_when_one_copy_is_right() {
        let auth = Authenticator::new(
            Some(&Secret::new("thryve:old,thryve:new")),
            Some(&Secret::new("X-Api-Key: k1")),
            None,
            false,
        )
        .unwrap();
        let right = basic("thryve:new");
        let wrong = basic("thryve:nope");
        for request in [
            headers(&[("authorization", &right), ("authorization", &wrong)]),
            headers(&[("authorization", &wrong), ("authorization", &right)]),
            headers(&[("authorization", &right), ("authorization", &right)]),
            headers(&[("x-api-key", "k1"), ("x-api-key", "k0")]),
            headers(&[("x-api-key", "k1"), ("x-api-key", "k1")]),
            headers(&[
                ("x-api-key", "k1"),
                ("authorization", &right),
                ("authorization", &right),
            ]),
        ] {
            assert!(!auth.admits(&request), "{request:?}");
        }
        assert!(auth.admits(&headers(&[
            ("authorization", &right),
            ("x-other", "a"),
            ("x-other", "b")
        ])));
        assert!(auth.admits(&headers(&[("x-api-key", "k1")])));
    }

    #[test]
    fn no_credentials_needs_explicit_opt_in() {
        let err = Authenticator::new(None, None, None, false).err().unwrap();
        assert!(err
            .to_string()
            .contains("WEBHOOK_ALLOW_UNAUTHENTICATED=true"));
        assert!(Authenticator::new(None, None, None, true)
            .unwrap()
            .admits(&HeaderMap::new()));
    }

    #[test]
    fn an_hmac_secret_alone_is_a_credential() {
        let hmac = HmacVerifier::new(
            Secret::new("k"),
            crate::http::hmac::LayoutSetting::Fixed(crate::http::hmac::Layout::WIRE_THEN_TIMESTAMP),
            crate::http::hmac::HmacMode::Enforce,
            300,
        )
        .unwrap();
        let auth = Authenticator::new(None, None, Some(hmac), false).unwrap();
        assert_eq!(auth.modes(), "hmac(wire+timestamp, enforce)");
        assert!(auth.admits(&HeaderMap::new()));
        let check = auth
            .check_signature(&HeaderMap::new(), Forms::plain(b"{}"), Utc::now())
            .unwrap();
        assert!(check.error.is_some());
    }

    #[test]
    fn malformed_settings_name_the_variable_without_the_secret() {
        let err = Authenticator::new(
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
        let err = Authenticator::new(None, Some(&Secret::new("bad header: v")), None, false)
            .err()
            .unwrap();
        assert!(err
            .to_string()
            .starts_with("WEBHOOK_AUTH_HEADER: entry 1: not a valid header name"));
    }
}
