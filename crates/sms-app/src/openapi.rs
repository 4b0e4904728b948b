//! The API description served at `/openapi.json` (OpenAPI 3.1).

use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

/// The OpenAPI document.
pub fn document() -> Value {
    let id_param = json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } });
    let name_param =
        json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "sms-gateway", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Multi-vendor SMS gateway with failover, a durable queue and rate limits." },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object",
                    "required": ["code", "message"],
                    "properties": { "code": { "type": "string" }, "message": { "type": "string" }, "field": { "type": "string" } } } } },
                "NewMessage": { "type": "object", "required": ["template", "recipients"], "additionalProperties": false,
                    "properties": {
                        "template": { "type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_.-]+$" },
                        "args": { "type": "array", "maxItems": 32, "items": { "type": "string", "maxLength": 500 } },
                        "recipients": { "type": "array", "minItems": 1, "maxItems": 1000, "uniqueItems": true,
                                        "items": { "type": "string", "description": "E.164, e.g. +8613800138000" } },
                        "idempotency_key": { "type": "string", "minLength": 1, "maxLength": 128 },
                        "expires_in_s": { "type": "integer", "minimum": 1, "maximum": 604800 } } },
                "Accepted": { "type": "object", "properties": {
                    "id": { "type": "string", "format": "uuid" }, "status": { "type": "string", "enum": ["sent", "queued"] },
                    "vendor": { "type": "string" }, "reason": { "type": "string" }, "may_duplicate": { "type": "boolean" } } },
                "Message": { "type": "object", "properties": {
                    "id": { "type": "string" }, "status": { "type": "string", "enum": ["queued", "leased", "sent", "dead", "expired"] },
                    "reason": { "type": "string" }, "attempts": { "type": "integer" }, "max_attempts": { "type": "integer" },
                    "vendor": { "type": ["string", "null"] }, "last_error": { "type": ["string", "null"] },
                    "may_duplicate": { "type": "boolean" }, "created_at": { "type": "string", "format": "date-time" },
                    "updated_at": { "type": "string", "format": "date-time" } } }
            }
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/v1/messages": { "post": {
                "summary": "Send a message (or queue it when it cannot go out now)",
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/NewMessage" } } } },
                "responses": {
                    "200": { "description": "Sent", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Accepted" } } } },
                    "202": { "description": "Queued", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Accepted" } } } },
                    "400": error_response("Invalid request; `field` names the problem"),
                    "401": error_response("Missing or unknown token"),
                    "409": error_response("Idempotency key reused for a different message"),
                    "413": error_response("Body larger than max_body_bytes"),
                    "422": error_response("Rejected by the vendor, or already expired"),
                    "429": error_response("A recipient is over its per-recipient limit; see Retry-After"),
                    "503": error_response("Could neither send nor queue"),
                    "504": error_response("Timed out and the policy is to report it")
                } } },
            "/v1/messages/{id}": { "get": { "summary": "A message's status", "parameters": [id_param.clone()],
                "responses": { "200": { "description": "The message", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Message" } } } },
                               "404": error_response("No such message") } } },
            "/v1/vendors": { "get": { "summary": "Vendors: health, volume, price, spend", "responses": { "200": { "description": "Vendors" } } } },
            "/v1/vendors/{name}/disable": { "post": { "summary": "Take a vendor out of rotation", "parameters": [name_param.clone()],
                "responses": { "200": { "description": "Disabled" }, "404": error_response("No such vendor") } } },
            "/v1/vendors/{name}/enable": { "post": { "summary": "Put a vendor back", "parameters": [name_param.clone()],
                "responses": { "200": { "description": "Enabled" }, "404": error_response("No such vendor") } } },
            "/v1/vendors/{name}/simulation": { "put": { "summary": "Change a simulated vendor's faults", "parameters": [name_param],
                "responses": { "200": { "description": "Changed" }, "400": error_response("Bad settings"), "404": error_response("No such simulated vendor") } } },
            "/v1/queue": { "get": { "summary": "Messages by status", "responses": { "200": { "description": "Counts" } } } },
            "/v1/queue/{id}/retry": { "post": { "summary": "Re-queue a dead or expired message", "parameters": [id_param],
                "responses": { "202": { "description": "Queued again" }, "404": error_response("No such message"), "409": error_response("Not dead or expired") } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "security": [], "responses": { "200": { "description": "Metrics" } } } },
            "/healthz": { "get": { "summary": "Liveness", "security": [], "responses": { "200": { "description": "Alive" } } } },
            "/readyz": { "get": { "summary": "Readiness (storage answers)", "security": [], "responses": { "200": { "description": "Ready" }, "503": { "description": "Not ready" } } } },
            "/openapi.json": { "get": { "summary": "This document", "security": [], "responses": { "200": { "description": "OpenAPI" } } } }
        }
    })
}
