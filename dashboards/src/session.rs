//! Who is looking: page sessions on top of the API's tokens and roles.
//!
//! A person signs in with an API token (`fleetpulse token create --role …`); the server
//! checks it like the API does, keeps a session in memory and gives the browser a random
//! session id in the `fp_session` cookie (`HttpOnly`, `SameSite=Strict`, `Path=/`, and
//! `Secure` when the server speaks TLS). The store never sees the session id; the session
//! holds the token's digest, and every request looks the token up again, so a revoked
//! token ends its sessions at their next request. Sessions end after
//! [`SessionLimits::idle`] without a request, after [`SessionLimits::lifetime`] in any
//! case, at sign-out, and when the process restarts (sign in again).
//!
//! Every form that changes state carries the session's CSRF token (a hidden `csrf` field,
//! or the `x-csrf-token` header from the page's script), compared in constant time. The
//! sign-in form itself is protected by a double-submit cookie (`fp_signin`).
//!
//! With `http.auth = "disabled"` (the demo, loopback only) pages open directly as
//! `anonymous` with every role; forms still carry a CSRF token (one per process).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use fleetpulse_api::AuthMode;
use fleetpulse_api::auth::{Caller, token_digest};
use fleetpulse_domain::dispatch::{Actor, Role};
use ring::rand::SecureRandom;

use crate::UiState;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "fp_session";
/// Name of the sign-in form's double-submit cookie.
pub const SIGN_IN_COOKIE: &str = "fp_signin";

/// How long sessions live and how many there may be.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// A session without a request for this long ends (default 8 h).
    pub idle: Duration,
    /// A session ends this long after sign-in whatever happens (default 7 days).
    pub lifetime: Duration,
    /// Most sessions held at once; signing in beyond it ends the least recently used one
    /// (default 10 000).
    pub max: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(8 * 3600),
            lifetime: Duration::from_secs(7 * 24 * 3600),
            max: 10_000,
        }
    }
}

/// 32 random bytes from the OS as 64 hex digits.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // the OS generator failing is not something a page can recover from; a session id
    // of zeros would be guessable, so refuse loudly
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS random generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal strings, compared without an early exit.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

struct Session {
    token_id: i64,
    token_digest: [u8; 32],
    csrf: String,
    started: Instant,
    last_seen: Instant,
}

/// The sessions of this process, keyed by the SHA-256 of their id.
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    limits: SessionLimits,
    /// The CSRF token of every form when authentication is disabled.
    anonymous_csrf: String,
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            limits,
            anonymous_csrf: random_hex(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session for a checked token; answers the session id for the cookie.
    pub fn start(&self, token_id: i64, digest: [u8; 32]) -> String {
        let id = random_hex();
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| self.live(s, now));
        if map.len() >= self.limits.max
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            token_digest(&id),
            Session {
                token_id,
                token_digest: digest,
                csrf: random_hex(),
                started: now,
                last_seen: now,
            },
        );
        id
    }

    /// Ends the session with this id (sign-out); nothing when there is none.
    pub fn end(&self, id: &str) {
        self.lock().remove(&token_digest(id));
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) < self.limits.idle
            && now.duration_since(s.started) < self.limits.lifetime
    }

    /// The token behind a live session (and its CSRF token), marking it used.
    fn touch(&self, id: &str) -> Option<(i64, [u8; 32], String)> {
        let key = token_digest(id);
        let now = Instant::now();
        let mut map = self.lock();
        let live = map.get(&key).map(|s| self.live(s, now))?;
        if !live {
            map.remove(&key);
            return None;
        }
        let s = map.get_mut(&key)?;
        s.last_seen = now;
        Some((s.token_id, s.token_digest, s.csrf.clone()))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value for this server (`Secure` under TLS); `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The person looking at a page: their caller identity (the API's), a display name and
/// the CSRF token their forms carry.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub caller: Caller,
    /// The token's name, or `anonymous`.
    pub name: String,
    pub csrf: String,
    /// Signed in with a token (sign-out is offered); `false` when auth is disabled.
    pub signed_in: bool,
}

impl Viewer {
    /// Whether the viewer has one of `roles` (admin and disabled auth have every role).
    pub fn may(&self, roles: &[Role]) -> bool {
        self.caller.require(roles).is_ok()
    }

    /// The role's name for the top bar.
    pub fn role_name(&self) -> &'static str {
        self.caller.role.map_or("every role", |r| r.as_str())
    }

    /// The refusal of a state change whose CSRF token is not this session's; `None`
    /// when it is.
    pub fn csrf_refusal(&self, presented: Option<&str>) -> Option<Response> {
        match presented {
            Some(p) if same(p, &self.csrf) => None,
            _ => Some(crate::layout::refusal(
                StatusCode::FORBIDDEN,
                "This form is stale or did not come from this site (its CSRF token does not match your session). Reload the page and try again.",
            )),
        }
    }
}

/// Where a person who is not signed in is sent: the sign-in page, coming back here after.
fn to_sign_in(parts: &Parts, reason: Option<&str>) -> Response {
    if parts.method != Method::GET {
        return crate::layout::refusal(
            StatusCode::UNAUTHORIZED,
            "Your session has ended. Sign in again, then repeat the action.",
        );
    }
    let next = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut query = vec![("next", next)];
    if let Some(r) = reason {
        query.push(("reason", r.to_owned()));
    }
    let location = format!(
        "/sign-in?{}",
        serde_urlencoded::to_string(&query).unwrap_or_default()
    );
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

impl FromRequestParts<UiState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &UiState) -> Result<Self, Response> {
        let app = &state.app;
        if app.auth == AuthMode::Disabled {
            return Ok(Viewer {
                caller: Caller {
                    actor: Actor("anonymous".into()),
                    role: None,
                    token: None,
                },
                name: "anonymous".into(),
                csrf: state.sessions.anonymous_csrf.clone(),
                signed_in: false,
            });
        }
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_sign_in(parts, None));
        };
        let Some((token_id, digest, csrf)) = state.sessions.touch(id) else {
            return Err(to_sign_in(parts, Some("expired")));
        };
        match app.dispatch.api_token_by_digest(digest).await {
            Ok(Some(t)) if t.id == token_id => Ok(Viewer {
                caller: Caller {
                    actor: Actor::token(t.id, &t.name),
                    role: Some(t.role),
                    token: Some((t.id, digest)),
                },
                name: t.name,
                csrf,
                signed_in: true,
            }),
            Ok(_) => {
                // revoked (or gone): the session ends with it
                state.sessions.end(id);
                Err(to_sign_in(parts, Some("revoked")))
            }
            Err(e) => {
                tracing::warn!(error = %e, "pages: checking a session's token failed");
                Err(crate::layout::refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The store cannot be read right now; try again in a moment.",
                ))
            }
        }
    }
}

/// The `Set-Cookie` header that gives the browser its session id.
pub fn session_cookie(id: &str, secure: bool) -> (axum::http::HeaderName, HeaderValue) {
    (SET_COOKIE, set_cookie(SESSION_COOKIE, id, secure, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; fp_session=abc ; b=2"),
        );
        h.append(COOKIE, HeaderValue::from_static("fp_signin=xyz"));
        assert_eq!(cookie(&h, "fp_session"), Some("abc"));
        assert_eq!(cookie(&h, "fp_signin"), Some("xyz"));
        assert_eq!(cookie(&h, "fp"), None);
    }

    #[test]
    fn session_cookies_are_strict_http_only_and_secure_under_tls() {
        let c = set_cookie(SESSION_COOKIE, "v", true, None);
        let c = c.to_str().expect("ascii");
        for part in [
            "fp_session=v",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        let plain = set_cookie(SESSION_COOKIE, "v", false, Some(0));
        assert!(!plain.to_str().expect("ascii").contains("Secure"));
    }

    #[test]
    fn sessions_end_when_idle_at_sign_out_and_beyond_the_cap() {
        let s = Sessions::new(SessionLimits {
            idle: Duration::from_secs(3600),
            lifetime: Duration::from_secs(7200),
            max: 2,
        });
        let a = s.start(1, [1; 32]);
        let b = s.start(2, [2; 32]);
        assert_eq!(s.touch(&a).map(|t| t.0), Some(1));
        // a third session ends the least recently used one (b)
        let c = s.start(3, [3; 32]);
        assert!(s.touch(&b).is_none());
        assert!(s.touch(&c).is_some());
        s.end(&a);
        assert!(s.touch(&a).is_none());
        assert_eq!(s.len(), 1);
        assert!(!same("abc", "abd") && same("abc", "abc") && !same("ab", "abc"));
        let idle = Sessions::new(SessionLimits {
            idle: Duration::ZERO,
            ..SessionLimits::default()
        });
        let d = idle.start(4, [4; 32]);
        assert!(
            idle.touch(&d).is_none(),
            "an idle limit of zero ends it at once"
        );
    }
}
