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

#[tokio::test]
async fn a_named_client_sees_only_its_own_messages_and_keys() {
    let crm = "crm-token-0123456789";
    let config = format!(
        "{}[clients.crm]\ntoken_sha256 = [\"{}\"]\n",
        config(),
        hex::encode(Sha256::digest(crm.as_bytes()))
    );
    let server = Server::start(&Backends::Embedded, &config).await;
    let body = json!({ "template": "SMS_ORDER", "args": ["1"],
                       "recipients": ["+8613800000011"], "idempotency_key": "order-7" });
    let r = server
        .client
        .post(server.url("/v1/messages"))
        .bearer_auth(SHOP_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let get_as = |token: &'static str| {
        server
            .client
            .get(server.url(&format!("/v1/messages/{id}")))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(get_as(SHOP_TOKEN).await.unwrap().status(), StatusCode::OK);
    assert_eq!(get_as(TOKEN).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        get_as(crm).await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "another client's message is as if absent"
    );
    // The same key and content from another client is not the shop's message.
    let r = server
        .client
        .post(server.url("/v1/messages"))
        .bearer_auth(crm)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let listed = server
        .client
        .get(server.url("/v1/messages?client=shop&status=sent"))
        .bearer_auth(crm)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::BAD_REQUEST);
}
