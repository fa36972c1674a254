//! Who may use the console and the operator actions: the operator token, sessions, CSRF tokens,
//! the `Origin` check and the limit on failed sign-ins.
//!
//! A session is a cookie `{expires_at}.{nonce}.{mac}`: its end (ms since epoch), 16 random bytes
//! and an HMAC-SHA256 of both under a key derived from the operator token. Nothing is kept on the
//! server, so a session holds across restarts and on every process started with the same token,
//! and changing the token ends every session. The CSRF token of a session is an HMAC of its nonce
//! under the same key: a page carries it in its forms, and a state change needs both.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::store::now_ms;

/// How long a session lasts unless [`OperatorAuth::session_ttl`] says otherwise.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);

/// Failed sign-ins one client may make per window before it is refused for the rest of it.
pub const DEFAULT_SIGN_IN_FAILURES: u32 = 5;

/// The window of [`DEFAULT_SIGN_IN_FAILURES`].
pub const DEFAULT_SIGN_IN_WINDOW: Duration = Duration::from_secs(60);

/// Clients whose failed sign-ins are remembered at most; past it, the ones whose window is over
/// are forgotten first, then the oldest.
const MAX_TRACKED_CLIENTS: usize = 4096;

/// Random bytes in a session's nonce.
const NONCE_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// The operator token and what guards its use: constant-time comparison, sessions for the
/// console, the `Origin` check and the limit on failed sign-ins.
///
/// Without a token (`OperatorAuth::new(None)`, or an empty one) everything it guards is refused:
/// the console answers 403, and so should the operator actions of the service that mounts it.
/// Cheap to clone; clones share the record of failed sign-ins.
///
/// ```
/// use std::time::Duration;
/// use saga_core::console::OperatorAuth;
///
/// let auth = OperatorAuth::new(Some("a long random token".into()))
///     .session_ttl(Duration::from_secs(3600))
///     .allow_origin("https://ops.example.com");
/// assert!(auth.is_enabled());
/// assert!(auth.check_token("a long random token"));
/// assert!(!auth.check_token("a guess"));
/// ```
#[derive(Clone)]
pub struct OperatorAuth {
    keys: Option<Arc<Keys>>,
    session_ttl: Duration,
    sign_in_failures: u32,
    sign_in_window: Duration,
    origins: Arc<Vec<String>>,
    secure_cookie: bool,
    hint: Option<Arc<str>>,
    failures: Arc<Mutex<HashMap<IpAddr, Failures>>>,
}

/// What is derived from the token; the token itself is not kept.
struct Keys {
    /// SHA-256 of the token: what a given token is compared with.
    digest: [u8; 32],
    /// The key of session and CSRF MACs (a block of SHA-256).
    mac: [u8; 64],
}

/// Failed sign-ins of one client in its current window.
#[derive(Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

impl fmt::Debug for OperatorAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorAuth")
            .field("enabled", &self.is_enabled())
            .field("session_ttl", &self.session_ttl)
            .field("sign_in_failures", &self.sign_in_failures)
            .field("sign_in_window", &self.sign_in_window)
            .field("origins", &self.origins)
            .field("secure_cookie", &self.secure_cookie)
            .field("hint", &self.hint)
            .finish_non_exhaustive()
    }
}

/// A signed-in operator's session, read from a valid, unexpired cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    /// The CSRF token that the session's forms carry.
    pub csrf: String,
}

/// Why a sign-in was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignInRefused {
    /// The token is not the operator token.
    WrongToken,
    /// The client failed too often; it may try again after this long.
    TooMany(Duration),
}

impl OperatorAuth {
    /// Guards with `token`; `None` or an empty token refuses everything.
    pub fn new(token: Option<String>) -> Self {
        let keys = token.filter(|t| !t.is_empty()).map(|token| {
            let digest = Sha256::digest(token.as_bytes()).into();
            let mac = Sha512::new()
                .chain_update(b"saga console session key\0")
                .chain_update(token.as_bytes())
                .finalize()
                .into();
            Arc::new(Keys { digest, mac })
        });
        OperatorAuth {
            keys,
            session_ttl: DEFAULT_SESSION_TTL,
            sign_in_failures: DEFAULT_SIGN_IN_FAILURES,
            sign_in_window: DEFAULT_SIGN_IN_WINDOW,
            origins: Arc::new(Vec::new()),
            secure_cookie: false,
            hint: None,
            failures: Arc::default(),
        }
    }

    /// How long a console session lasts from its sign-in ([`DEFAULT_SESSION_TTL`] unless set).
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// After `failures` failed sign-ins within `window`, a client is refused until its window
    /// is over, without its token being looked at (5 per minute unless set). Clients are told
    /// apart by their IP address, as the server sees it: behind a proxy they share one.
    pub fn sign_in_limit(mut self, failures: u32, window: Duration) -> Self {
        self.sign_in_failures = failures.max(1);
        self.sign_in_window = window;
        self
    }

    /// Accepts state-changing requests whose `Origin` is `origin` (`scheme://host[:port]`), in
    /// addition to the origin of the request's own `Host` header. Needed behind a proxy that
    /// rewrites `Host`.
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        let origin = origin.into().trim_end_matches('/').to_ascii_lowercase();
        Arc::make_mut(&mut self.origins).push(origin);
        self
    }

    /// Marks the session cookie `Secure`, so that browsers send it over HTTPS only. Set it when
    /// the console is served over HTTPS, directly or behind a proxy.
    pub fn secure_cookie(mut self, secure: bool) -> Self {
        self.secure_cookie = secure;
        self
    }

    /// Says on the sign-in form where the token comes from (`"the --admin-token of serve"`).
    pub fn token_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into().into());
        self
    }

    /// Whether an operator token is configured.
    pub fn is_enabled(&self) -> bool {
        self.keys.is_some()
    }

    /// Whether `given` is the operator token, in time that depends on neither token: both are
    /// hashed first, then compared in constant time. Always `false` without a token.
    pub fn check_token(&self, given: &str) -> bool {
        let Some(keys) = &self.keys else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(given.ct_eq(&keys.digest))
    }

    /// Whether `Authorization: Bearer TOKEN` carries the operator token.
    pub fn check_bearer(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|token| self.check_token(token))
    }

    /// Whether a state-changing request may go on as far as its `Origin` header tells: it has
    /// none (a client that is not a browser), or one that is allowed. A present `Origin` that
    /// is neither the origin of the request's `Host` nor one given to
    /// [`OperatorAuth::allow_origin`] is foreign, `null` included.
    pub fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        match headers.get(header::ORIGIN) {
            None => true,
            Some(origin) => self.origin_matches(headers, origin.to_str().unwrap_or("")),
        }
    }

    /// Like [`OperatorAuth::origin_allowed`], but a missing `Origin` is refused too: what the
    /// console asks of its own forms, which browsers always send with one.
    pub(crate) fn origin_present_and_allowed(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::ORIGIN)
            .is_some_and(|o| self.origin_matches(headers, o.to_str().unwrap_or("")))
    }

    fn origin_matches(&self, headers: &HeaderMap, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.origins.contains(&origin) {
            return true;
        }
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        match origin.split_once("://") {
            Some(("http" | "https", authority)) => !host.is_empty() && authority == host,
            _ => false,
        }
    }

    /// Checks a sign-in from `client`: refused without looking at the token while the client
    /// is over its limit, else the token decides. A success forgets the client's failures.
    pub(crate) fn sign_in(&self, client: IpAddr, token: &str) -> Result<(), SignInRefused> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let current = failures
            .get(&client)
            .copied()
            .filter(|f| now.duration_since(f.since) < self.sign_in_window);
        if let Some(f) = current
            && f.count >= self.sign_in_failures
        {
            let left = self
                .sign_in_window
                .saturating_sub(now.duration_since(f.since));
            return Err(SignInRefused::TooMany(left.max(Duration::from_secs(1))));
        }
        if self.check_token(token) {
            failures.remove(&client);
            return Ok(());
        }
        if failures.len() >= MAX_TRACKED_CLIENTS && !failures.contains_key(&client) {
            let window = self.sign_in_window;
            failures.retain(|_, f| now.duration_since(f.since) < window);
            if failures.len() >= MAX_TRACKED_CLIENTS
                && let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, f)| f.since)
                    .map(|(k, _)| *k)
            {
                failures.remove(&oldest);
            }
        }
        let next = match current {
            Some(f) => Failures {
                count: f.count + 1,
                ..f
            },
            None => Failures {
                since: now,
                count: 1,
            },
        };
        failures.insert(client, next);
        Err(SignInRefused::WrongToken)
    }

    /// A new session's cookie value and its session; `None` without a token.
    pub(crate) fn new_session(&self) -> Option<(String, Session)> {
        let keys = self.keys.as_ref()?;
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ttl = i64::try_from(self.session_ttl.as_millis()).unwrap_or(i64::MAX);
        let claims = format!("{}.{}", now_ms().saturating_add(ttl), hex(&nonce));
        let value = format!("{claims}.{}", hex(&mac(&keys.mac, b"session", &claims)));
        let session = session_of(keys, &claims);
        Some((value, session))
    }

    /// The session a cookie value stands for, if it was made with this token and has not
    /// expired.
    pub(crate) fn session(&self, value: &str) -> Option<Session> {
        let keys = self.keys.as_ref()?;
        let (claims, given_mac) = value.rsplit_once('.')?;
        let (expires_at, nonce) = claims.split_once('.')?;
        let expected = hex(&mac(&keys.mac, b"session", claims));
        if !bool::from(expected.as_bytes().ct_eq(given_mac.as_bytes())) {
            return None;
        }
        let expires_at: i64 = expires_at.parse().ok()?;
        if expires_at <= now_ms() || nonce.len() != 2 * NONCE_LEN {
            return None;
        }
        Some(session_of(keys, claims))
    }

    /// Whether `given` is the CSRF token of `session`, compared in constant time.
    pub(crate) fn check_csrf(session: &Session, given: &str) -> bool {
        bool::from(session.csrf.as_bytes().ct_eq(given.as_bytes()))
    }

    /// How long a session lasts.
    pub(crate) fn ttl(&self) -> Duration {
        self.session_ttl
    }

    /// Where the token comes from, as the sign-in form says it.
    pub(crate) fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Whether the session cookie is marked `Secure`.
    pub(crate) fn cookie_is_secure(&self) -> bool {
        self.secure_cookie
    }
}

/// The client a request came from, for the sign-in limit: its peer address when the server
/// records it (`into_make_service_with_connect_info`), else one shared client.
pub(crate) fn client_of(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn session_of(keys: &Keys, claims: &str) -> Session {
    let nonce = claims.split_once('.').map_or("", |(_, n)| n);
    Session {
        csrf: hex(&mac(&keys.mac, b"csrf", nonce)),
    }
}

/// HMAC-SHA256 under `key` of `purpose`, a NUL, then `message`.
fn mac(key: &[u8; 64], purpose: &[u8], message: &str) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new(key.into());
    mac.update(purpose);
    mac.update(b"\0");
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth() -> OperatorAuth {
        OperatorAuth::new(Some("secret".into()))
    }

    #[test]
    fn a_token_is_checked_whatever_its_length() {
        let auth = auth();
        assert!(auth.check_token("secret"));
        for wrong in ["", "secre", "secret ", "Secret", "secretsecret"] {
            assert!(!auth.check_token(wrong), "{wrong:?}");
        }
        let disabled = OperatorAuth::new(Some(String::new()));
        assert!(!disabled.is_enabled());
        assert!(!disabled.check_token(""));
        assert!(disabled.new_session().is_none());
    }

    #[test]
    fn sessions_are_signed_and_expire() {
        let auth = auth();
        let (value, session) = auth.new_session().expect("a session");
        assert_eq!(auth.session(&value), Some(session.clone()));
        assert!(OperatorAuth::check_csrf(&session, &session.csrf));
        assert!(!OperatorAuth::check_csrf(&session, ""));
        // Another token's sessions are not valid here.
        assert_eq!(
            OperatorAuth::new(Some("other".into())).session(&value),
            None
        );
        // Moving the expiry forward breaks the MAC.
        let (expires, rest) = value.split_once('.').unwrap();
        let later = format!("{}.{rest}", expires.parse::<i64>().unwrap() + 1);
        assert_eq!(auth.session(&later), None);
        for bad in ["", "x", "1.2", "1.2.3", "..", &value[1..]] {
            assert_eq!(auth.session(bad), None, "{bad:?}");
        }
        let expired = auth.clone().session_ttl(Duration::from_secs(1));
        let (value, _) = expired.new_session().unwrap();
        let claims = value.rsplit_once('.').unwrap().0;
        let nonce = claims.split_once('.').unwrap().1;
        let past = format!("{}.{nonce}", now_ms() - 1);
        let forged = format!(
            "{past}.{}",
            hex(&mac(&expired.keys.as_ref().unwrap().mac, b"session", &past))
        );
        assert_eq!(expired.session(&forged), None, "an expired session");
    }

    #[test]
    fn origins_must_match_the_host_or_be_allowed() {
        let auth = auth().allow_origin("https://ops.example.com/");
        let headers = |origin: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8081"));
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            h
        };
        assert!(auth.origin_allowed(&headers(None)));
        assert!(!auth.origin_present_and_allowed(&headers(None)));
        for good in [
            "http://127.0.0.1:8081",
            "https://127.0.0.1:8081",
            "https://ops.example.com",
        ] {
            assert!(
                auth.origin_present_and_allowed(&headers(Some(good))),
                "{good}"
            );
        }
        for bad in [
            "null",
            "http://127.0.0.1:8082",
            "http://evil.example",
            "ftp://127.0.0.1:8081",
            "",
        ] {
            assert!(!auth.origin_allowed(&headers(Some(bad))), "{bad}");
        }
    }

    #[test]
    fn failed_sign_ins_are_limited_per_client() {
        let auth = auth().sign_in_limit(2, Duration::from_secs(60));
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(auth.sign_in(a, "x"), Err(SignInRefused::WrongToken));
        assert_eq!(auth.sign_in(a, "y"), Err(SignInRefused::WrongToken));
        // Over the limit even the right token is refused, without being looked at.
        assert!(matches!(
            auth.sign_in(a, "secret"),
            Err(SignInRefused::TooMany(_))
        ));
        assert_eq!(
            auth.sign_in(b, "secret"),
            Ok(()),
            "another client is not limited"
        );
        let short = OperatorAuth::new(Some("secret".into())).sign_in_limit(1, Duration::ZERO);
        assert_eq!(short.sign_in(a, "x"), Err(SignInRefused::WrongToken));
        assert_eq!(short.sign_in(a, "secret"), Ok(()), "the window is over");
    }
}
