//! Extractors that reject with [`ApiError`], and the parsers that turn raw query
//! parameters into domain values at the edge, naming the parameter when one is wrong.
//!
//! Query structs keep every parameter as `Option<String>` and refuse unknown names, so a
//! typo (`?stauts=open`) is an error instead of a silently ignored filter, and each value
//! is parsed here with a message that says what form was expected.

use std::fmt::Display;
use std::str::FromStr;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use fleetpulse_domain::Serial;
use fleetpulse_domain::device::UnknownValue;
use fleetpulse_domain::store::ReadingCursor;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// [`axum::extract::Query`] that rejects with an [`ApiError`].
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(value))
    }
}

/// [`axum::extract::Path`] that rejects with an [`ApiError`].
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Path(value))
    }
}

/// [`axum::Json`] (request side) that rejects with an [`ApiError`].
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Json(value))
    }
}

/// How many items a list may return: the default when absent, at most `max`.
#[derive(Clone, Copy, Debug)]
pub struct LimitRule {
    pub default: usize,
    pub max: usize,
}

/// Lists of devices, orders, dead letters and alarm episodes.
pub const LIST_LIMIT: LimitRule = LimitRule {
    default: 100,
    max: 1000,
};

/// Raw readings of one device.
pub const READING_LIMIT: LimitRule = LimitRule {
    default: 1000,
    max: 10_000,
};

/// Parses `limit`: a whole number from 1 to `rule.max`, `rule.default` when absent.
pub fn limit(raw: Option<&str>, rule: LimitRule) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(rule.default);
    };
    let n: usize = raw.trim().parse().map_err(|_| {
        ApiError::parameter(
            "limit",
            format!(
                "limit must be a whole number from 1 to {}, got {raw:?}",
                rule.max
            ),
        )
    })?;
    if n == 0 {
        return Err(ApiError::parameter(
            "limit",
            format!("limit must be at least 1 (at most {})", rule.max),
        ));
    }
    if n > rule.max {
        return Err(ApiError::parameter(
            "limit",
            format!(
                "limit = {n} is over the maximum of {}; page with `after` instead",
                rule.max
            ),
        ));
    }
    Ok(n)
}

/// Parses an optional RFC 3339 time parameter.
pub fn time(parameter: &'static str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    DateTime::parse_from_rfc3339(raw.trim()).map(|t| Some(t.with_timezone(&Utc))).map_err(|e| {
        // A literal '+' in a query string decodes to a space.
        let hint = if raw.contains(' ') { " (send a '+' offset as %2B, or use Z)" } else { "" };
        ApiError::parameter(
            parameter,
            format!(
                "{parameter} = {raw:?} is not an RFC 3339 time such as 2026-01-31T08:00:00Z{hint}: {e}"
            ),
        )
    })
}

/// Checks that a time range is not reversed.
pub fn ordered_range(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<(), ApiError> {
    match (from, to) {
        (Some(f), Some(t)) if f > t => Err(ApiError::parameter(
            "from",
            format!(
                "from ({}) is after to ({}); swap them",
                f.to_rfc3339(),
                t.to_rfc3339()
            ),
        )),
        _ => Ok(()),
    }
}

/// Parses an optional parameter with `parse`, whose error names what is wrong.
pub fn optional<T, E: Display>(
    parameter: &'static str,
    raw: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, ApiError> {
    raw.map(|s| parse(s).map_err(|e| ApiError::parameter(parameter, e.to_string())))
        .transpose()
}

/// Parses an optional parameter whose value is one of a fixed set (`status`, `kind`, …),
/// listing the allowed values when it is not.
pub fn one_of<T>(parameter: &'static str, raw: Option<&str>) -> Result<Option<T>, ApiError>
where
    T: FromStr<Err = UnknownValue>,
{
    optional(parameter, raw, |s| {
        s.parse::<T>().map_err(|e| {
            format!(
                "{parameter} = {:?} is not one of {}",
                e.value,
                e.allowed.join(", ")
            )
        })
    })
}

/// The pattern of an id cursor in the OpenAPI document: what [`id_cursor`] accepts.
pub const ID_CURSOR_PATTERN: &str = "^[0-9]{1,18}$";

/// Parses an id cursor (`after`) as handed out in a page's `next`: 1 to 18 digits, no
/// sign and no spaces, exactly what [`ID_CURSOR_PATTERN`] says.
pub fn id_cursor(raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    optional("after", raw, |s| {
        Some(s)
            .filter(|s| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| {
                format!("after = {s:?} is not a cursor; pass the `next` value of the previous page")
            })
    })
}

/// Parses a readings cursor (`after`) as handed out in a page's `next`.
pub fn reading_cursor(raw: Option<&str>) -> Result<Option<ReadingCursor>, ApiError> {
    optional("after", raw, |s| {
        ReadingCursor::parse(s).ok_or_else(|| {
            format!("after = {s:?} is not a cursor; pass the `next` value of the previous page")
        })
    })
}

/// Parses the serial of a path (`/devices/{serial}`).
pub fn serial(raw: &str) -> Result<Serial, ApiError> {
    Serial::parse(raw)
        .map_err(|e| ApiError::parameter("serial", format!("{raw:?} is not a valid serial: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: ApiError) -> String {
        e.to_string()
    }

    #[test]
    fn limit_defaults_and_caps() {
        assert_eq!(limit(None, LIST_LIMIT).ok(), Some(100));
        assert_eq!(limit(Some("1000"), LIST_LIMIT).ok(), Some(1000));
        let over = message(limit(Some("1001"), LIST_LIMIT).expect_err("over max"));
        assert!(over.contains("limit") && over.contains("1000"), "{over}");
        assert!(limit(Some("0"), LIST_LIMIT).is_err());
        assert!(
            message(limit(Some("ten"), LIST_LIMIT).expect_err("not a number")).contains("\"ten\"")
        );
    }

    #[test]
    fn times_name_the_parameter_and_the_format() {
        assert!(
            time("from", Some("2026-01-31T08:00:00Z"))
                .expect("valid")
                .is_some()
        );
        assert!(
            time("from", Some("2026-01-31T08:00:00+01:00"))
                .expect("valid")
                .is_some()
        );
        let e = message(time("from", Some("yesterday")).expect_err("bad"));
        assert!(e.starts_with("from") && e.contains("RFC 3339"), "{e}");
        let e = message(time("to", Some("2026-01-31T08:00:00 01:00")).expect_err("bad"));
        assert!(e.contains("%2B"), "{e}");
    }

    #[test]
    fn reversed_ranges_are_refused() {
        let a = time("from", Some("2026-01-02T00:00:00Z")).expect("valid");
        let b = time("to", Some("2026-01-01T00:00:00Z")).expect("valid");
        assert!(ordered_range(a, b).is_err());
        assert!(ordered_range(b, a).is_ok());
        assert!(ordered_range(a, None).is_ok());
    }
}
