//! TEMPORARY (replaced before landing).
use axum::response::Response;
use axum::extract::State;
use crate::UiState;
use crate::session::Viewer;
pub async fn page(viewer: Viewer, State(state): State<UiState>) -> Response {
    crate::layout::page(Some(&viewer), crate::layout::Nav::Fleet, "quality", &state.app.clock, maud::html! { h1 { "quality" } })
}
