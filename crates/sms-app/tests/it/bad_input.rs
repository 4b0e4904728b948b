//! Bad input through HTTP against the real binary: malformed JSON, wrong types, huge
//! bodies, 10,000 recipients, invalid and edge-case numbers, control characters and
//! non-BMP text, empty and oversized templates, then seeded random and mutated bodies.
//! Every one gets a 4xx whose body names the problem; nothing is stored; nothing panics.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fuzz_targets::Inputs;
use crate::server::{Backends, Server, TOKEN};

const VENDORS: &str = r#"
[failover]
cooldown_s = 600
[vendors.aliyun]
order = 0
simulation = { latency_ms = 1 }
"#;

const OK: &str = "+8613800138000";

async fn post_raw(server: &Server, content_type: &str, body: Vec<u8>) -> (StatusCode, String) {
    if body.len() > 64 * 1024 {
        return post_huge(server, content_type, body).await;
    }
    let r = server
        .client
        .post(server.url("/v1/messages"))
        .bearer_auth(TOKEN)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = r.status();
    (status, r.text().await.unwrap_or_default())
}

/// Posts a body far over the limit on a raw connection, reading while writing: the
/// server answers 413 from the headers and closes without reading the rest, which makes
/// an HTTP client that writes the whole body first fail with a reset now and then.
async fn post_huge(server: &Server, content_type: &str, body: Vec<u8>) -> (StatusCode, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        // The server may stop reading at any point; a failed write is expected.
        if write.write_all(head.as_bytes()).await.is_ok() {
            let _ = write.write_all(&body).await;
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut answer)).await;
    writer.abort();
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or_else(|| panic!("no HTTP answer to a huge body: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn stats(server: &Server) -> Value {
    server
        .get("/v1/queue")
        .await
        .json()
        .await
        .expect("queue stats")
}

fn total(stats: &Value) -> u64 {
    ["queued", "leased", "sent", "dead", "expired"]
        .iter()
        .map(|s| stats[*s].as_u64().unwrap_or(0))
        .sum()
}

type Case = (String, Vec<u8>, StatusCode, Option<&'static str>);

fn raw(
    cases: &mut Vec<Case>,
    name: &str,
    body: &[u8],
    status: StatusCode,
    field: Option<&'static str>,
) {
    cases.push((name.to_owned(), body.to_vec(), status, field));
}

fn with(cases: &mut Vec<Case>, name: &str, body: Value, field: &'static str) {
    cases.push((
        name.to_owned(),
        body.to_string().into_bytes(),
        StatusCode::BAD_REQUEST,
        Some(field),
    ));
}

/// Bodies that must be refused, with the status and the field the error must name
/// (`None`: any field, as long as there is a message).
fn curated() -> Vec<Case> {
    let bad = StatusCode::BAD_REQUEST;
    let mut cases: Vec<Case> = Vec::new();
    raw(&mut cases, "not JSON", b"not json", bad, Some("body"));
    raw(&mut cases, "empty body", b"", bad, Some("body"));
    raw(&mut cases, "cut short", br#"{"template": "#, bad, None);
    raw(&mut cases, "an array", b"[]", bad, Some("body"));
    raw(&mut cases, "null", b"null", bad, Some("body"));
    raw(
        &mut cases,
        "invalid UTF-8",
        b"{\"template\":\"\xff\xfe\",\"recipients\":[\"+8613800138000\"]}",
        bad,
        None,
    );
    raw(
        &mut cases,
        "lone surrogate",
        br#"{"template":"t","args":["\ud800"],"recipients":["+8613800138000"]}"#,
        bad,
        Some("args[0]"),
    );
    raw(
        &mut cases,
        "trailing garbage",
        br#"{"template":"t","recipients":["+8613800138000"]} {}"#,
        bad,
        Some("body"),
    );
    raw(
        &mut cases,
        "duplicate key",
        br#"{"template":"t","template":"u","recipients":["+8613800138000"]}"#,
        bad,
        None,
    );
    let deep = format!("{{\"template\":{}1{}}}", "[".repeat(300), "]".repeat(300));
    raw(&mut cases, "nested 300 deep", deep.as_bytes(), bad, None);

    with(
        &mut cases,
        "template a number",
        json!({ "template": 1, "recipients": [OK] }),
        "template",
    );
    with(
        &mut cases,
        "template missing",
        json!({ "recipients": [OK] }),
        "body",
    );
    with(
        &mut cases,
        "template empty",
        json!({ "template": "", "recipients": [OK] }),
        "template",
    );
    with(
        &mut cases,
        "template with a space",
        json!({ "template": "a b", "recipients": [OK] }),
        "template",
    );
    with(
        &mut cases,
        "template oversized",
        json!({ "template": "T".repeat(65), "recipients": [OK] }),
        "template",
    );
    with(
        &mut cases,
        "template control character",
        json!({ "template": "a\u{7}", "recipients": [OK] }),
        "template",
    );
    with(
        &mut cases,
        "template non-BMP",
        json!({ "template": "😀", "recipients": [OK] }),
        "template",
    );
    with(
        &mut cases,
        "recipients a string",
        json!({ "template": "t", "recipients": OK }),
        "recipients",
    );
    with(
        &mut cases,
        "recipients missing",
        json!({ "template": "t" }),
        "body",
    );
    with(
        &mut cases,
        "recipients empty",
        json!({ "template": "t", "recipients": [] }),
        "recipients",
    );
    with(
        &mut cases,
        "recipient a number",
        json!({ "template": "t", "recipients": [8613800138000_u64] }),
        "recipients[0]",
    );
    with(
        &mut cases,
        "args an object",
        json!({ "template": "t", "args": {}, "recipients": [OK] }),
        "args",
    );
    with(
        &mut cases,
        "arg null",
        json!({ "template": "t", "args": [null], "recipients": [OK] }),
        "args[0]",
    );
    with(
        &mut cases,
        "33 args",
        json!({ "template": "t", "args": vec!["a"; 33], "recipients": [OK] }),
        "args",
    );
    with(
        &mut cases,
        "arg of 501 characters",
        json!({ "template": "t", "args": ["é".repeat(501)], "recipients": [OK] }),
        "args[0]",
    );
    for (i, c) in ["\u{0}", "\u{7}", "\u{1b}[31m", "\u{7f}", "\u{85}"]
        .iter()
        .enumerate()
    {
        with(
            &mut cases,
            &format!("control character {i} in an argument"),
            json!({ "template": "t", "args": ["ok", format!("x{c}y")], "recipients": [OK] }),
            "args[1]",
        );
    }
    for (i, number) in [
        "",
        "+",
        "13800138000",
        "+0123456789",
        "+1234567890123456",
        "+123456",
        "+86 138 0013 800０",
        "+86１３８００１３８０００",
        "＋8613800138000",
        "+86\u{0}13800138000",
        "+86 138 0013 8000 ext. 5",
        "+86😀13800138000",
        "+86\u{200b}13800138000",
        "00",
    ]
    .iter()
    .enumerate()
    {
        with(
            &mut cases,
            &format!("invalid number {i} {number:?}"),
            json!({ "template": "t", "recipients": [OK.replace("000", "001"), number] }),
            "recipients[1]",
        );
    }
    with(
        &mut cases,
        "the same number twice, spelled differently",
        json!({ "template": "t", "recipients": [OK, "0086 138-0013-8000"] }),
        "recipients[1]",
    );
    with(
        &mut cases,
        "idempotency key empty",
        json!({ "template": "t", "recipients": [OK], "idempotency_key": "" }),
        "idempotency_key",
    );
    with(
        &mut cases,
        "idempotency key oversized",
        json!({ "template": "t", "recipients": [OK], "idempotency_key": "k".repeat(129) }),
        "idempotency_key",
    );
    for (i, v) in [
        json!(0),
        json!(-1),
        json!(1.5),
        json!("300"),
        json!(604_801),
        json!(u64::MAX),
    ]
    .iter()
    .enumerate()
    {
        with(
            &mut cases,
            &format!("expires_in_s {i} {v}"),
            json!({ "template": "t", "recipients": [OK], "expires_in_s": v }),
            "expires_in_s",
        );
    }
    raw(
        &mut cases,
        "expires_in_s beyond u64",
        br#"{"template":"t","recipients":["+8613800138000"],"expires_in_s":18446744073709551616}"#,
        bad,
        Some("expires_in_s"),
    );
    with(
        &mut cases,
        "an unknown field",
        json!({ "template": "t", "recipients": [OK], "extra": 1 }),
        "extra",
    );
    let too_large = StatusCode::PAYLOAD_TOO_LARGE;
    let ten_thousand: Vec<String> = (0..10_000).map(|i| format!("+86138{i:08}")).collect();
    cases.push((
        "10,000 recipients".into(),
        json!({ "template": "t", "recipients": ten_thousand })
            .to_string()
            .into_bytes(),
        too_large,
        None,
    ));
    cases.push((
        "a 1 MB body".into(),
        json!({ "template": "t", "recipients": [OK], "args": ["x".repeat(1 << 20)] })
            .to_string()
            .into_bytes(),
        too_large,
        None,
    ));
    cases
}

#[tokio::test]
async fn bad_requests_get_a_4xx_naming_the_problem_and_store_nothing() {
    let server = Server::start(&Backends::Embedded, VENDORS).await;
    let before = stats(&server).await;
    for (name, body, want, field) in curated() {
        let (status, text) = post_raw(&server, "application/json", body).await;
        assert_eq!(status, want, "{name}: {text}");
        let err: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: not JSON: {text}"));
        let code = if want == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "invalid_request"
        };
        assert_eq!(err["error"]["code"], code, "{name}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "{name}: {err}");
        assert!(
            message.len() < 1024,
            "{name}: the error quotes too much: {} bytes",
            message.len()
        );
        if let Some(field) = field {
            assert_eq!(err["error"]["field"], field, "{name}: {err}");
        }
    }
    let (status, _) = post_raw(
        &server,
        "text/plain",
        json!({ "template": "t", "recipients": [OK] })
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert_eq!(
        stats(&server).await,
        before,
        "bad requests must store nothing"
    );
    assert_eq!(
        server.deliveries_of("\"message_id\""),
        0,
        "nothing was sent"
    );

    // Non-BMP text, joiners and separators are valid arguments and go out.
    let r = server
        .post("/v1/messages", json!({ "template": "t", "args": ["😀 𝟙 👨‍👩‍👧 ###;\"\\", "", "line\nbreak\ttab"], "recipients": [OK] }))
        .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
    let status = server.stop();
    assert!(status.success());
}

#[tokio::test]
async fn seeded_random_bodies_never_get_a_5xx_and_only_accepted_ones_are_stored() {
    let server = Server::start(&Backends::Embedded, VENDORS).await;
    let before = total(&stats(&server).await);
    let mut inputs = Inputs::new(0x00C0_FFEE);
    let mut accepted = 0u64;
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for case in 0..600 {
        let body = if case % 2 == 0 {
            inputs.request()
        } else {
            inputs.mutated()
        };
        let shown: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        let (status, text) = post_raw(&server, "application/json", body).await;
        *by_status.entry(status.as_u16()).or_default() += 1;
        match status {
            StatusCode::OK | StatusCode::ACCEPTED => accepted += 1,
            s if s.is_client_error() => {
                let err: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("case {case}: not JSON: {text}"));
                assert!(
                    err["error"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty()),
                    "case {case} {shown:?}: {err}"
                );
            }
            s => panic!("case {case} {shown:?}: {s} {text}"),
        }
    }
    println!("bad-input status counts over 600 random bodies: {by_status:?}");
    assert!(
        by_status.get(&400).copied().unwrap_or(0) > 100,
        "{by_status:?}"
    );
    // Accepted messages are stored when sent (a moment later); nothing else is.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = total(&stats(&server).await);
        if now - before == accepted {
            break;
        }
        assert!(
            now - before < accepted,
            "stored {} for {accepted} accepted",
            now - before
        );
        assert!(
            Instant::now() < deadline,
            "stored {} for {accepted} accepted",
            now - before
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
    let status = server.stop();
    assert!(status.success());
}

#[test]
fn ten_thousand_recipients_are_refused_by_the_decoder_too() {
    // Over HTTP the body limit answers first; with a larger limit the decoder must.
    let raw = sms_core::RawSmsRequest {
        template: "t".into(),
        recipients: (0..10_000).map(|i| format!("+86138{i:08}")).collect(),
        ..Default::default()
    };
    let e = sms_core::SmsRequest::try_from(raw).unwrap_err();
    assert_eq!(e.field, "recipients");
    assert!(e.to_string().contains("10000"), "{e}");
}
