//! Authentication by API tokens and authorisation by role.
//!
//! A token is `fpt_` followed by 64 hex digits (32 bytes from the operating system's
//! random generator). It is shown once, when created (`fleetpulse token create` or
//! `POST /api/v1/tokens`); the store keeps only its SHA-256 digest, and a fast hash is
//! enough for a random 256-bit secret (nothing to guess from a dictionary). Clients send
//! `Authorization: Bearer fpt_…` (the scheme name in any case: `bearer`, `BEARER`).
//!
//! - No or an unknown/revoked token: **401** with `WWW-Authenticate: Bearer`.
//! - A valid token whose role may not do this: **403**, naming the roles that may.
//! - `admin` may do everything. With `http.auth = "disabled"` (the `demo` default, and
//!   only allowed on a loopback address) every request acts as `anonymous` with every
//!   role.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use fleetpulse_domain::dispatch::{Actor, Role};
use ring::rand::SecureRandom;
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;

/// Whether requests must carry a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    /// Every request is `anonymous` with every role (demo on a laptop).
    Disabled,
}

/// Prefix of every API token, so a leaked one is recognisable in logs and scanners.
pub const TOKEN_PREFIX: &str = "fpt_";

/// A new random token and its digest.
pub fn new_token() -> Result<(String, [u8; 32]), ApiError> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::Internal("the OS random generator failed".into()))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("{TOKEN_PREFIX}{hex}");
    let digest = token_digest(&token);
    Ok((token, digest))
}

/// SHA-256 of a token as presented.
pub fn token_digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Who is calling.
#[derive(Clone, Debug)]
pub struct Caller {
    pub actor: Actor,
    /// `None` when authentication is disabled: every role.
    pub role: Option<Role>,
    /// The token's id and digest (`None` when authentication is disabled): long-lived
    /// answers (the order stream) count and re-check it.
    pub token: Option<(i64, [u8; 32])>,
}

impl Caller {
    /// Passes when the caller has one of `roles` (or is admin, or auth is disabled).
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        match self.role {
            None | Some(Role::Admin) => Ok(()),
            Some(r) if roles.contains(&r) => Ok(()),
            Some(r) => {
                let mut allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                allowed.push(Role::Admin.as_str());
                Err(ApiError::Forbidden {
                    message: format!(
                        "role {r} may not do this; allowed roles: {}",
                        allowed.join(", ")
                    ),
                    details: json!({ "role": r, "allowed_roles": allowed }),
                })
            }
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.auth == AuthMode::Disabled {
            return Ok(Caller {
                actor: Actor("anonymous".into()),
                role: None,
                token: None,
            });
        }
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::Unauthorized(
                "this endpoint needs an API token: send `Authorization: Bearer fpt_…` \
                 (create one with `fleetpulse token create --role …`)"
                    .into(),
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(bearer_token)
            .filter(|t| t.starts_with(TOKEN_PREFIX) && t.len() <= 128)
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be `Bearer fpt_…`".into())
            })?;
        let digest = token_digest(token);
        let found = state.dispatch.api_token_by_digest(digest).await?;
        let Some(t) = found else {
            return Err(ApiError::Unauthorized(
                "the API token is unknown or revoked".into(),
            ));
        };
        Ok(Caller {
            actor: Actor::token(t.id, &t.name),
            role: Some(t.role),
            token: Some((t.id, digest)),
        })
    }
}

/// The credentials of an `Authorization: Bearer <token>` header. The scheme name is
/// case-insensitive (RFC 9110 §11.1: `bearer` and `BEARER` are `Bearer`) and is
/// separated from the token by one or more spaces.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then(|| rest.trim_start_matches(' '))
        .filter(|token| !token.is_empty())
}

/// Roles that read orders, devices and the catalog: every role.
pub const READERS: &[Role] = &[
    Role::Dispatcher,
    Role::Planner,
    Role::Quality,
    Role::DeviceAdmin,
];
/// Roles that move orders through their lifecycle.
pub const DISPATCHERS: &[Role] = &[Role::Dispatcher];
/// Roles that create orders by hand.
pub const ORDER_CREATORS: &[Role] = &[Role::Dispatcher, Role::Planner];
/// Roles that register devices and change their status.
pub const DEVICE_ADMINS: &[Role] = &[Role::DeviceAdmin];
/// Roles that read the audit log.
pub const AUDITORS: &[Role] = &[Role::Quality];
/// Token management: admin only.
pub const ADMINS: &[Role] = &[];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_digested() {
        let (a, da) = new_token().expect("token");
        let (b, _) = new_token().expect("token");
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 68 && a != b);
        assert_eq!(token_digest(&a), da);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in [
            "Bearer fpt_1",
            "bearer fpt_1",
            "BEARER fpt_1",
            "bEaReR   fpt_1",
        ] {
            assert_eq!(bearer_token(header), Some("fpt_1"), "{header:?}");
        }
        for header in ["Basic fpt_1", "Bearerfpt_1", "Bearer ", "Bearer", "fpt_1"] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }

    #[test]
    fn admin_passes_everything_and_others_get_403() {
        let admin = Caller {
            actor: Actor("x".into()),
            role: Some(Role::Admin),
            token: None,
        };
        assert!(admin.require(ADMINS).is_ok());
        let quality = Caller {
            actor: Actor("y".into()),
            role: Some(Role::Quality),
            token: None,
        };
        let e = quality.require(DISPATCHERS).expect_err("forbidden");
        assert_eq!(e.status(), axum::http::StatusCode::FORBIDDEN);
        assert!(quality.require(READERS).is_ok());
    }
}
