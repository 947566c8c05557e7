//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations
//! and the domain types' `ToSchema` derives, served at `/api/openapi.json`, with an
//! interactive page at `/api/docs` whose assets are compiled in (no CDN).

use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::AppState;
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "fleetpulse API",
        description = "Devices, telemetry and the work orders fleetpulse raises; the dispatch side's integration surface (docs/dispatch-api.md)."
    ),
    paths(
        routes::health::health,
        routes::metrics::metrics,
        routes::devices::list,
        routes::devices::register,
        routes::devices::detail,
        routes::devices::readings,
        routes::devices::rollups,
        routes::devices::alarms,
        routes::device_lifecycle::change_status,
        routes::device_lifecycle::failures,
        routes::device_lifecycle::history,
        routes::device_import::import,
        routes::dead_letters::list,
        routes::catalog::models,
        routes::orders::list,
        routes::orders::create,
        routes::orders::one,
        routes::orders::history,
        routes::orders::acknowledge,
        routes::orders::assign,
        routes::orders::start,
        routes::orders::complete,
        routes::orders::cancel,
        routes::order_feed::events,
        routes::order_feed::stream,
        routes::sla::attainment,
        routes::admin::create_token,
        routes::admin::list_tokens,
        routes::admin::revoke_token,
        routes::admin::audit,
        routes::webhooks::create,
        routes::webhooks::list,
        routes::webhooks::disable,
        routes::webhooks::deliveries,
        routes::reliability::mtbf,
        routes::reliability::weibull,
        routes::reliability::pareto,
        routes::reliability::trend,
        routes::reliability::mttr,
        routes::reliability::import_failures,
        routes::reliability::import_maintenance,
        routes::history::import_devices,
        routes::history::import_failures,
        routes::history::import_maintenance,
        routes::history::import_meters,
        routes::history::import_telemetry,
        routes::history::import_alarms,
        routes::history::maintenance,
        routes::history::components,
        routes::history::meters,
        routes::predictions::list,
        routes::predictions::of_device,
        routes::predictions::models,
        routes::predictions::train,
        routes::predictions::backtest,
        routes::predictions::model,
        routes::predictions::queue,
        routes::predictions::run
    ),
    // the enums query parameters refer to (`$ref`), so the document resolves them
    components(schemas(
        crate::error::ErrorBody,
        fleetpulse_domain::LifecycleStatus,
        fleetpulse_domain::RejectReason,
        fleetpulse_domain::order::OrderKind,
        fleetpulse_domain::order::SlaState,
        fleetpulse_domain::prediction::PredictionKind,
        fleetpulse_domain::webhook::DeliveryState
    )),
    modifiers(&Conventions)
)]
pub struct ApiDoc;

/// Bearer tokens on every operation but the public ones, and the error answers every
/// operation can give, all in the one `ErrorBody` shape.
struct Conventions;

/// Errors any route may answer (besides its own): bad parameters, authentication,
/// roles, missing resources, bodies, server faults.
const COMMON_ERRORS: [(&str, &str); 9] = [
    (
        "400",
        "a parameter or the body is malformed (the parameter is named)",
    ),
    ("401", "no valid API token"),
    ("403", "the token's role may not do this"),
    ("404", "no such resource"),
    ("405", "method not allowed"),
    ("413", "body too large"),
    ("415", "unsupported content type"),
    ("422", "well-formed but invalid body"),
    ("500", "internal error (details are logged, not shown)"),
];

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "API token `fpt_…` (`fleetpulse token create --role …`)",
                    ))
                    .build(),
            ),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                for (status, description) in COMMON_ERRORS {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error_response(description));
                }
                op.responses
                    .responses
                    .entry("503".to_owned())
                    .or_insert_with(|| error_response("the store is unavailable; retry later"));
            }
        }
    }
}

/// `/api/openapi.json` and the interactive page at `/api/docs` (public: the contract is
/// not a secret; every operation in it still needs its token). The page's assets are
/// compiled into the binary (utoipa-swagger-ui's `vendored` feature): it works offline.
pub fn router() -> Router<AppState> {
    utoipa_swagger_ui::SwaggerUi::new("/api/docs")
        .url("/api/openapi.json", ApiDoc::openapi())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parameter's schema in the document, as JSON.
    fn parameter(doc: &serde_json::Value, path: &str, name: &str) -> serde_json::Value {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .map(|p| p["schema"].clone())
            .unwrap_or_default()
    }

    #[test]
    fn query_parameters_have_their_real_types_and_the_patterns_of_their_parsers() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("the document is JSON");
        let readings = "/api/v1/devices/{serial}/readings";
        assert_eq!(
            parameter(&doc, readings, "after")["pattern"],
            fleetpulse_domain::store::ReadingCursor::PATTERN
        );
        assert_eq!(parameter(&doc, readings, "limit")["type"], "integer");
        assert_eq!(parameter(&doc, readings, "limit")["maximum"], 10000);
        assert_eq!(parameter(&doc, readings, "from")["format"], "date-time");
        assert_eq!(
            parameter(&doc, "/api/v1/dead-letters", "after")["pattern"],
            crate::extract::ID_CURSOR_PATTERN
        );
        assert_eq!(parameter(&doc, "/api/v1/orders", "limit")["maximum"], 1000);
        assert_eq!(
            parameter(&doc, "/api/v1/devices/{serial}/rollups", "field")["pattern"],
            "^[a-z][a-z0-9_]{0,63}$"
        );
        let alarms = "/api/v1/devices/{serial}/alarms";
        assert_eq!(
            parameter(&doc, alarms, "after")["pattern"],
            fleetpulse_domain::store::ReadingCursor::PATTERN
        );
        assert_eq!(parameter(&doc, alarms, "active")["type"], "boolean");
        assert_eq!(parameter(&doc, alarms, "from")["format"], "date-time");
        // every `$ref` of a parameter resolves
        let components = &doc["components"]["schemas"];
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for op in item.as_object().expect("operation").values() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if let Some(r) = p["schema"]["$ref"].as_str() {
                        let name = r.trim_start_matches("#/components/schemas/");
                        assert!(
                            components.get(name).is_some(),
                            "{path}: {r} is not in the document"
                        );
                    }
                }
            }
        }
        // every query parameter of every operation says more than "a string"
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("operation") {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let schema = &p["schema"];
                    let typed = schema.get("$ref").is_some()
                        || schema["type"] != "string"
                        || ["pattern", "format", "enum", "maxLength"]
                            .iter()
                            .any(|k| schema.get(*k).is_some());
                    let free_text = matches!(
                        (path.as_str(), p["name"].as_str()),
                        // any text is a valid value of these: a serial to list after, the
                        // audit log's exact-match filters, a model version (404 if unknown)
                        ("/api/v1/devices", Some("after"))
                            | ("/api/v1/audit", Some("target" | "actor"))
                            | ("/api/v1/models/{version}", Some("version"))
                    );
                    assert!(
                        typed || free_text,
                        "{method} {path} {}: a bare string {schema}",
                        p["name"]
                    );
                }
            }
        }
    }
}
