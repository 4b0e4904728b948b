//! Named clients over HTTP: a client's hashed token lets it in, its allow-list limits
//! the templates it may send, and `api_tokens` go on working as a client without a name.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::server::{Backends, Server, TOKEN};

const SHOP_TOKEN: &str = "shop-token-0123456789";

fn config() -> String {
    let digest = hex::encode(Sha256::digest(SHOP_TOKEN.as_bytes()));
    format!(
        r#"
[clients.shop]
token_sha256 = ["{digest}"]
templates = ["SMS_ORDER"]
[vendors.aliyun]
order = 0
simulation = {{ latency_ms = 1 }}
"#
    )
}

async fn post(server: &Server, token: &str, template: &str, to: &str) -> (StatusCode, Value) {
    let r = server
        .client
        .post(server.url("/v1/messages"))
        .bearer_auth(token)
        .json(&json!({ "template": template, "args": ["1"], "recipients": [to] }))
        .send()
        .await
        .expect("POST");
    (r.status(), r.json().await.expect("JSON"))
}

#[tokio::test]
async fn a_client_sends_only_its_templates_and_api_tokens_still_work() {
    let server = Server::start(&Backends::Embedded, &config()).await;
    let (status, body) = post(&server, SHOP_TOKEN, "SMS_ORDER", "+8613800000001").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(&server, SHOP_TOKEN, "SMS_LOGIN", "+8613800000002").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "template_not_allowed");
    assert_eq!(body["error"]["field"], "template");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("client shop") && message.contains("SMS_LOGIN"),
        "{message}"
    );
    let (status, body) = post(&server, TOKEN, "SMS_LOGIN", "+8613800000003").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the unnamed client sends any template: {body}"
    );
    let (status, _) = post(
        &server,
        "shop-token-0123456780",
        "SMS_ORDER",
        "+8613800000004",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a token one character off is unknown"
    );
}
