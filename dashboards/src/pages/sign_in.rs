//! Sign-in with an API token, and sign-out (see [`crate::session`]).

use axum::Form;
use axum::extract::{Query, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fleetpulse_api::AuthMode;
use fleetpulse_api::auth::{TOKEN_PREFIX, token_digest};
use maud::html;
use serde::Deserialize;

use crate::UiState;
use crate::layout::{self, Nav};
use crate::session::{self, SESSION_COOKIE, SIGN_IN_COOKIE, Viewer};

#[derive(Debug, Default, Deserialize)]
pub struct FormQuery {
    next: Option<String>,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SignIn {
    token: String,
    nonce: String,
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SignOut {
    csrf: Option<String>,
}

/// Only a path of this site: never `//host` or `https://…` (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

fn render(state: &UiState, next: &str, message: Option<&str>, status: StatusCode) -> Response {
    let nonce = session::random_hex();
    let body = html! {
        section.sign-in {
            h1 { "Sign in" }
            p { "Paste an API token. An administrator creates one with "
                code { "fleetpulse token create --role dispatcher|planner|quality|device_admin|admin --name you" }
                "; your role decides what you see and may do." }
            @if let Some(m) = message {
                p.error role="alert" { (m) }
            }
            form method="post" action="/sign-in" {
                input type="hidden" name="nonce" value=(nonce);
                input type="hidden" name="next" value=(next);
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="off" required
                    placeholder="fpt_…" autofocus;
                button type="submit" { "Sign in" }
            }
        }
    };
    let mut r = layout::page(None, Nav::SignIn, "Sign in", &state.app.clock, body);
    *r.status_mut() = status;
    r.headers_mut().append(
        SET_COOKIE,
        session::set_cookie(
            SIGN_IN_COOKIE,
            &nonce,
            state.options.secure_cookies,
            Some(600),
        ),
    );
    r
}

/// `GET /sign-in`: the form (straight to the fleet when authentication is disabled).
pub async fn form(State(state): State<UiState>, Query(q): Query<FormQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    if state.app.auth == AuthMode::Disabled {
        return redirect(&next);
    }
    let message = match q.reason.as_deref() {
        Some("revoked") => Some("Your API token was revoked: sign in with another one."),
        Some("expired") => Some("Your session has ended: sign in again."),
        Some("signed_out") => Some("You are signed out."),
        _ => None,
    };
    render(&state, &next, message, StatusCode::OK)
}

/// `POST /sign-in`: checks the token like the API does and starts a session.
pub async fn submit(
    State(state): State<UiState>,
    headers: HeaderMap,
    Form(f): Form<SignIn>,
) -> Response {
    let next = safe_next(f.next.as_deref());
    if state.app.auth == AuthMode::Disabled {
        return redirect(&next);
    }
    let nonce_ok =
        session::cookie(&headers, SIGN_IN_COOKIE).is_some_and(|c| session::same(c, &f.nonce));
    if !nonce_ok {
        return render(
            &state,
            &next,
            Some("This sign-in form is stale or did not come from this site; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let token = f.token.trim();
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return render(
            &state,
            &next,
            Some("That is not an API token (they start with fpt_)."),
            StatusCode::UNAUTHORIZED,
        );
    }
    let digest = token_digest(token);
    match state.app.dispatch.api_token_by_digest(digest).await {
        Ok(Some(t)) => {
            let id = state.sessions.start(t.id, digest);
            tracing::info!(token = t.id, name = %t.name, role = %t.role, "pages: signed in");
            let mut r = redirect(&next);
            let (name, value) = session::session_cookie(&id, state.options.secure_cookies);
            r.headers_mut().append(name, value);
            r.headers_mut().append(
                SET_COOKIE,
                session::set_cookie(SIGN_IN_COOKIE, "", state.options.secure_cookies, Some(0)),
            );
            r
        }
        Ok(None) => render(
            &state,
            &next,
            Some("This API token is unknown or revoked."),
            StatusCode::UNAUTHORIZED,
        ),
        Err(e) => {
            tracing::warn!(error = %e, "pages: checking a token at sign-in failed");
            render(
                &state,
                &next,
                Some("The store cannot be read right now; try again in a moment."),
                StatusCode::SERVICE_UNAVAILABLE,
            )
        }
    }
}

/// `POST /sign-out`: ends the session (CSRF-checked) and forgets the cookie.
pub async fn sign_out(
    State(state): State<UiState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<SignOut>,
) -> Response {
    if let Some(refused) = viewer.csrf_refusal(f.csrf.as_deref()) {
        return refused;
    }
    if let Some(id) = session::cookie(&headers, SESSION_COOKIE) {
        state.sessions.end(id);
    }
    let mut r = redirect(if viewer.signed_in {
        "/sign-in?reason=signed_out"
    } else {
        "/"
    });
    r.headers_mut().append(
        SET_COOKIE,
        session::set_cookie(SESSION_COOKIE, "", state.options.secure_cookies, Some(0)),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_is_a_path_of_this_site_only() {
        assert_eq!(safe_next(Some("/dispatch?x=1")), "/dispatch?x=1");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "dispatch",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
