//! The HTTP baseline of `cargo xtask bench`: an axum server on the same runtime as
//! `serve` whose `POST /v1/messages` reads the body and answers a small JSON document
//! without doing anything else, so the gateway's figures can be read against what
//! axum and the machine allow.
//!
//! `cargo run --release -p sms-app --example hello -- 127.0.0.1:18081`

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

async fn post_message(body: Bytes) -> impl IntoResponse {
    let status = if body.is_empty() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"sent"}"#,
    )
}

fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".to_owned());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let app = Router::new()
            .route("/v1/messages", post(post_message))
            .route("/healthz", get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}
