//! The HTTP API (axum): messages, vendors, queue, metrics, health, and its OpenAPI
//! description.
//!
//! Every route is added with `.routes(routes!(handler))`, which serves the handler at
//! the method and path of its `#[utoipa::path]` attribute and adds the same operation
//! to the document served at `/openapi.json`; the router and its description cannot
//! differ. Handlers return `Result<_, ApiError>`, and [`ApiError`] is the one place
//! that writes a refusal.

mod admission;
mod auth;
mod blocklist;
mod cancel;
mod error;
mod listing;
mod messages;
mod public;
mod queue;
pub mod receipts;
mod schemas;
mod status;
mod vendors;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use sms_core::{DeferredQueue, DeliveryLog};
use sms_failover::Gateway;
use sms_providers::simulated::SimulatedVendor;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::config::clients::Client;
use crate::metrics::Metrics;
use crate::openapi;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The send path.
    pub gateway: Arc<Gateway>,
    /// The message store.
    pub queue: Arc<dyn DeferredQueue>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The clients, by the SHA-256 of each of their tokens.
    pub clients: Arc<HashMap<[u8; 32], Arc<Client>>>,
    /// Accepted read-only bearer tokens: `GET` routes only.
    pub operator_tokens: Arc<Vec<String>>,
    /// Simulated vendors by name, for fault control.
    pub simulated: Arc<HashMap<String, Arc<SimulatedVendor>>>,
    /// Which recipients vendors accepted, and their delivery receipts.
    pub deliveries: Arc<dyn DeliveryLog>,
    /// Where each vendor pushes its delivery receipts.
    pub receipts: Arc<receipts::ReceiptEndpoints>,
    /// How long after a send a recipient without a receipt is `unknown`.
    pub unknown_after: chrono::Duration,
    /// The status callbacks' settings, when they are configured: without them a request
    /// naming a `callback_url` is refused.
    pub callbacks: Option<crate::config::CallbacksConfig>,
    /// Numbers no message may go to.
    pub blocklist: Arc<dyn sms_core::Blocklist>,
    /// Each named client's own limits.
    pub client_limiter: Arc<dyn sms_core::ClientLimiter>,
    /// What each client and the deployment spent, against their caps.
    pub spend: Arc<crate::spend::Spend>,
}

/// The routes anyone may call, on the document's base (title, bearer scheme).
fn open_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(public::healthz))
        .routes(routes!(public::readyz))
        .routes(routes!(public::metrics))
        .routes(routes!(public::openapi_json))
        .routes(routes!(status::status_page))
        .routes(routes!(receipts::post_receipts))
}

/// The routes that need a bearer token, each marked as such in the document.
fn protected_routes() -> OpenApiRouter<Arc<AppState>> {
    let mut routes = OpenApiRouter::default()
        .routes(routes!(messages::post_message))
        .routes(routes!(messages::get_message, cancel::cancel_message))
        .routes(routes!(listing::list_messages))
        .routes(routes!(
            blocklist::block_number,
            blocklist::get_blocked,
            blocklist::unblock_number
        ))
        .routes(routes!(vendors::get_vendors))
        .routes(routes!(vendors::disable_vendor))
        .routes(routes!(vendors::enable_vendor))
        .routes(routes!(vendors::put_simulation))
        .routes(routes!(queue::get_queue))
        .routes(routes!(queue::retry_message))
        .routes(routes!(status::get_switches))
        .routes(routes!(status::get_activity));
    openapi::require_bearer(routes.get_openapi_mut());
    routes
}

/// The router, with auth on everything but health, metrics and the API description.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    // Handlers get the state behind one `Arc`: a request clones it twice (auth and
    // handler), one reference count instead of one per field.
    let state = Arc::new(state);
    let protected = protected_routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ));
    let (router, document) = open_routes().merge(protected).split_for_parts();
    router
        .layer(Extension(Arc::new(document)))
        .layer(middleware::map_response(
            move |response: Response| async move { too_large_as_json(response, max_body_bytes) },
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// axum's own 413 for an over-long body is plain text; callers get the JSON error shape
/// every other refusal has.
fn too_large_as_json(response: Response, max_body_bytes: usize) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE || is_json {
        return response;
    }
    ApiError::PayloadTooLarge { max_body_bytes }.into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// The document as `/openapi.json` serves it.
    fn document() -> Value {
        let (_, document) = open_routes().merge(protected_routes()).split_for_parts();
        serde_json::to_value(document).expect("the document as JSON")
    }

    /// Every `(method, path, operation)` of the document.
    fn operations(document: &Value) -> Vec<(String, String, Value)> {
        let mut found = Vec::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                found.push((method.clone(), path.clone(), operation.clone()));
            }
        }
        found
    }

    #[test]
    fn routes_enter_the_router_only_with_their_description() {
        // axum cannot list a router's routes, so this reads the source: a route added
        // any other way than `.routes(routes!(handler))` would be served undescribed.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
        let forbidden = [
            ".route(",
            ".route_service(",
            ".nest(",
            ".nest_service(",
            ".fallback(",
            ".fallback_service(",
            "Router::new(",
            "axum::routing",
        ];
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).expect("the http module's folder") {
            let path = entry.expect("a directory entry").path();
            let text = std::fs::read_to_string(&path).expect("a source file");
            // The tests below name the calls they look for.
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            for call in forbidden {
                assert!(
                    !code.contains(call),
                    "{}: expected routes added with `.routes(routes!(handler))`, found `{call}`",
                    path.display()
                );
            }
            files += 1;
        }
        assert!(
            files >= 7,
            "expected the http module's files, found {files}"
        );
    }

    #[test]
    fn v1_routes_need_the_bearer_token_and_the_others_do_not() {
        let document = document();
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"],
            json!({ "type": "http", "scheme": "bearer" })
        );
        let operations = operations(&document);
        assert_eq!(operations.len(), 21, "{operations:?}");
        for (method, path, operation) in operations {
            let security = &operation["security"];
            // Vendors cannot send a bearer token: the secret in the address stands in.
            let by_secret = path.starts_with("/v1/receipts/");
            if by_secret {
                assert!(security.is_null(), "{method} {path}: {security}");
                assert!(
                    operation["responses"]["404"].is_object(),
                    "{method} {path} documents its 404 for a wrong secret"
                );
            } else if path.starts_with("/v1/") {
                assert_eq!(security, &json!([{ "bearer": [] }]), "{method} {path}");
                assert!(
                    operation["responses"]["401"].is_object(),
                    "{method} {path} documents its 401"
                );
            } else {
                assert!(security.is_null(), "{method} {path}: {security}");
            }
        }
    }

    #[test]
    fn every_operation_documents_its_answers_and_path_parameters() {
        let document = document();
        for (method, path, operation) in operations(&document) {
            let responses = operation["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|status| status.starts_with('2')),
                "{method} {path} documents a success"
            );
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{method} {path} {status}"
                    );
                }
            }
            let declared: Vec<&str> = operation["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            for segment in path.split('/') {
                if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    assert!(declared.contains(&name), "{method} {path} declares {name}");
                }
            }
        }
    }

    #[test]
    fn the_message_request_schema_has_the_limits_validation_applies() {
        let document = document();
        assert_eq!(
            document["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/NewMessage"
        );
        let new_message = &document["components"]["schemas"]["NewMessage"];
        assert_eq!(new_message["required"], json!(["template", "recipients"]));
        assert_eq!(new_message["additionalProperties"], json!(false));
        let fields = &new_message["properties"];
        assert_eq!(
            fields["template"]["maxLength"],
            sms_core::TemplateId::MAX_LEN
        );
        assert_eq!(fields["args"]["maxItems"], sms_core::MAX_ARGS);
        assert_eq!(
            fields["args"]["items"]["maxLength"],
            sms_core::MAX_ARG_CHARS
        );
        assert_eq!(fields["recipients"]["maxItems"], sms_core::MAX_RECIPIENTS);
        assert_eq!(
            fields["idempotency_key"]["maxLength"],
            sms_core::IdempotencyKey::MAX_LEN
        );
        assert_eq!(fields["expires_in_s"]["maximum"], 7 * 24 * 3600);
    }
}
