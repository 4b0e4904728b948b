//! The blocklist over HTTP: a blocked number is refused with its reason and masked,
//! and accepted again once unblocked.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::{Backends, Server, TOKEN};

const CONFIG: &str = r#"
[vendors.aliyun]
order = 0
simulation = { latency_ms = 1 }
[limit]
recipient_windows = []
"#;

#[tokio::test]
async fn a_blocked_number_is_refused_masked_until_unblocked() {
    let server = Server::start(&Backends::Embedded, CONFIG).await;
    let number = "+8613400001234";
    let block = |body: Option<Value>| {
        let mut request = server
            .client
            .post(server.url(&format!("/v1/blocklist/{number}")))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let r = block(Some(json!({ "reason": "opted_out" })))
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    let entry: Value = r.json().await.expect("JSON");
    assert_eq!(entry["reason"], "opted_out", "{entry}");
    assert!(
        !entry.to_string().contains("13400001234"),
        "unmasked: {entry}"
    );
    // Blocking again keeps the first entry.
    let r = block(None).await.expect("POST");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "opted_out");

    let r = server
        .post(
            "/v1/messages",
            json!({ "template": "SMS_NOTICE", "args": ["x"],
                    "recipients": ["+8613400000001", number] }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "recipient_blocked", "{body}");
    assert_eq!(body["error"]["field"], "recipients[1]", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("opted_out"), "{message}");
    assert!(!message.contains("13400001234"), "unmasked: {message}");
    assert!(
        server.deliveries_of("+8613400000001") == 0,
        "nothing was sent for a refused request"
    );

    let r = server
        .client
        .delete(server.url(&format!("/v1/blocklist/{number}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = server.get(&format!("/v1/blocklist/{number}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = server
        .post(
            "/v1/messages",
            json!({ "template": "SMS_NOTICE", "args": ["x"], "recipients": [number] }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert!(
        !server.log().contains("13400001234"),
        "the log holds the number unmasked"
    );
}
