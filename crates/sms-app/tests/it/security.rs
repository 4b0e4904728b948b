//! Security checks on the real binary: auth on every `/v1` route, nothing secret or
//! personal in the logs of a full run, per-recipient limits against SMS bombing, and
//! SQL built only from constants and parameters.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::outcomes::{load, message, tail, wait_settled};
use crate::server::{Backends, Server, TOKEN, drop_schema, shared_backends};

const SIMULATED: &str = r#"
[failover]
cooldown_s = 600
[queue]
backoff_base_ms = 50
backoff_max_s = 1
drain_interval_ms = 100
[vendors.aliyun]
order = 0
simulation = { latency_ms = 1 }
[vendors.tencent]
order = 1
simulation = { latency_ms = 1 }
"#;

/// Every `/v1` operation the API describes, with its path parameters filled in.
async fn v1_operations(server: &Server) -> Vec<(Method, String)> {
    let doc: Value = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("JSON");
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        // Receipt pushes carry a secret in the address instead of a token (tested in
        // `receipts`).
        if !path.starts_with("/v1/") || path.starts_with("/v1/receipts/") {
            continue;
        }
        let filled = path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{name}", "aliyun");
        for method in item.as_object().expect("path item").keys() {
            let method: Method = method.to_uppercase().parse().expect("method");
            ops.push((method, filled.clone()));
        }
    }
    ops
}

#[tokio::test]
async fn every_v1_route_refuses_a_missing_or_wrong_token_and_logs_no_token() {
    let server = Server::start(&Backends::Embedded, SIMULATED).await;
    let ops = v1_operations(&server).await;
    assert!(ops.len() >= 8, "the API describes its routes: {ops:?}");
    let wrong = [
        None,
        Some("Bearer wrong-token-5e3a".to_owned()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
        Some("Bearer ".to_owned()),
    ];
    for (method, path) in &ops {
        for auth in &wrong {
            let mut req = server
                .client
                .request(method.clone(), server.url(path))
                .header("content-type", "application/json")
                .body(json!({ "outage": true }).to_string());
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = req.send().await.expect("request");
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let body: Value = r.json().await.expect("JSON error");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    // Nothing the refused requests asked for happened.
    let vendors: Value = server.get("/v1/vendors").await.json().await.expect("JSON");
    assert!(
        vendors["vendors"]
            .as_array()
            .expect("list")
            .iter()
            .all(|v| v["disabled"] == false),
        "{vendors}"
    );
    let queue: Value = server.get("/v1/queue").await.json().await.expect("JSON");
    assert_eq!(
        queue["sent"].as_u64().unwrap_or(0) + queue["queued"].as_u64().unwrap_or(0),
        0
    );
    // Open endpoints need no token.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let r = server
            .client
            .get(server.url(path))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let log = server.log();
    let refusals = log.matches("request refused").count();
    assert_eq!(
        refusals,
        ops.len() * wrong.len(),
        "every refusal is logged:\n{}",
        tail(&log)
    );
    assert!(!log.contains(TOKEN), "a token reached the log");
    assert!(
        !log.contains("wrong-token-5e3a"),
        "a wrong token reached the log"
    );
    let status = server.stop();
    assert!(status.success());
}

// ---------------------------------------------------------------------------------
// The logs of a full run.

struct Sandbox {
    child: Child,
    base: String,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sandbox(dir: &std::path::Path) -> Sandbox {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_sms-app"))
        .args(["sandbox", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--delivery-log")
        .arg(dir.join("sandbox.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the sandbox");
    let sandbox = Sandbox {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::Client::new()
        .get(format!("{}/_control/aliyun", sandbox.base))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "sandbox did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sandbox
}

/// Vendor secrets of the run; none may appear in the gateway's log.
const SECRETS: [&str; 6] = [
    "sandbox-aliyun-secret",
    "sandbox-tencent-key",
    "sandbox-cloopen-token",
    "sandbox-aliyun-id",
    "AKIDsandbox",
    "sandboxaccountsid",
];

fn real_vendors(base: &str) -> String {
    format!(
        r#"
[queue]
backoff_base_ms = 50
backoff_max_s = 1
drain_interval_ms = 100
[failover]
cooldown_s = 600
[vendors.aliyun]
kind = "aliyun"
order = 0
settings = {{ base_url = "{base}", access_key_id = "{}", access_key_secret = "{}", sign_name = "Test" }}
[vendors.tencent]
kind = "tencent"
order = 1
settings = {{ base_url = "{base}", secret_id = "{}", secret_key = "{}", sdk_app_id = "1400000000", sign_name = "Test" }}
[vendors.cloopen]
kind = "cloopen"
order = 2
settings = {{ base_url = "{base}", account_sid = "{}", auth_token = "{}", app_id = "sandboxapp" }}
"#,
        SECRETS[3], SECRETS[0], SECRETS[4], SECRETS[1], SECRETS[5], SECRETS[2]
    )
}

#[tokio::test]
async fn the_log_of_a_full_run_holds_no_token_secret_or_phone_number() {
    let dir = tempfile::tempdir().expect("dir");
    let sandbox = sandbox(dir.path()).await;
    let server = Server::start(&Backends::Embedded, &real_vendors(&sandbox.base)).await;
    let mut numbers = Vec::new();
    let mut ids = Vec::new();
    // Sends, a vendor outage with failover and queueing, a recipient limit, bad input
    // carrying numbers, wrong tokens, status look-ups.
    for i in 0..4 {
        numbers.push(format!("+86138001{i:05}"));
    }
    let first = load(&server, numbers.iter().map(|n| message(n)).collect(), 2).await;
    ids.extend(first.accepted);
    let r = reqwest::Client::new()
        .put(format!("{}/_control/aliyun", sandbox.base))
        .json(&json!({ "outage": true }))
        .send()
        .await
        .expect("control");
    assert!(r.status().is_success());
    for i in 0..4 {
        numbers.push(format!("+86139002{i:05}"));
    }
    let during = load(
        &server,
        numbers[4..].iter().map(|n| message(n)).collect(),
        1,
    )
    .await;
    assert_eq!(during.accepted.len(), 4, "{during:?}");
    ids.extend(during.accepted);
    let limited = load(&server, vec![message(&numbers[0])], 1).await;
    assert_eq!(limited.refused.get("429 recipient_limited"), Some(&1));
    for bad in [
        json!({ "template": "SMS_LOGIN", "recipients": ["+8613700312345x"] }),
        json!({ "template": "SMS_LOGIN", "recipients": ["+8613700312346", "+86 137 0031 2346"] }),
        json!({ "template": "SMS_LOGIN", "recipients": ["013700312347"] }),
    ] {
        let r = server.post("/v1/messages", bad).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    numbers.extend(["+8613700312345", "+8613700312346", "+8613700312347"].map(String::from));
    let r = server
        .client
        .get(server.url("/v1/queue"))
        .bearer_auth("wrong-token-a8f1")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for id in &ids {
        let _ = server.get(&format!("/v1/messages/{id}")).await;
    }
    wait_settled(&server, Duration::from_secs(30)).await;
    let mut server = server;
    let status = server.terminate();
    assert!(status.success());
    let log = server.log();
    drop(sandbox);

    // The run did log: starts, refusals, the outage and the switch.
    assert!(log.contains("request refused"), "{}", tail(&log));
    assert!(log.lines().count() >= 5, "{log}");
    assert!(!log.contains(TOKEN), "the API token is in the log");
    assert!(
        !log.contains("wrong-token-a8f1"),
        "a presented token is in the log"
    );
    for secret in SECRETS {
        assert!(
            !log.contains(secret),
            "vendor secret {secret:?} is in the log"
        );
    }
    // A number may appear masked (+86138****0000); its national digits may not appear
    // whole, in any spelling.
    for number in &numbers {
        let national = &number[3..];
        assert!(
            !log.contains(national),
            "unmasked number {number} is in the log:\n{}",
            log.lines()
                .filter(|l| l.contains(national))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------
// SMS bombing: one number, as fast as possible.

const BOMBING_REQUESTS: usize = 300;

async fn bomb(backends: &Backends, name: &str) {
    let server = Server::start(
        backends,
        &format!(
            "{SIMULATED}\n[limit]\nglobal_per_second = 100000\nrecipient_windows = [{{ limit = 1, window_s = 60 }}, {{ limit = 10, window_s = 86400 }}]\n"
        ),
    )
    .await;
    // The same number in every spelling a caller might use, with fresh idempotency keys,
    // so neither normalisation nor keys open a way around the limit.
    let spellings = [
        "+8613800138000",
        "+86 138 0013 8000",
        "0086-138-0013-8000",
        "+86(138)00138000",
    ];
    let bodies = (0..BOMBING_REQUESTS)
        .map(|i| {
            let mut b = message(spellings[i % spellings.len()]);
            if i % 2 == 1 {
                b["idempotency_key"] = json!(format!("bomb-{i}"));
            }
            b
        })
        .collect();
    let result = load(&server, bodies, 16).await;
    let limited = result
        .refused
        .get("429 recipient_limited")
        .copied()
        .unwrap_or(0);
    println!(
        "chaos-figures {}",
        json!({ "scenario": name, "figures": {
            "requests": BOMBING_REQUESTS, "http_200": result.sent, "http_202": result.accepted.len() - result.sent,
            "http_429": limited, "other": result.refused } })
    );
    assert_eq!(
        result.accepted.len(),
        1,
        "one message gets through: {result:?}"
    );
    assert_eq!(limited, BOMBING_REQUESTS - 1, "{result:?}");
    wait_settled(&server, Duration::from_secs(30)).await;
    let deliveries = std::fs::read_to_string(server.deliveries_path()).unwrap_or_default();
    assert_eq!(
        deliveries
            .lines()
            .filter(|l| l.contains("13800138000"))
            .count(),
        1,
        "the number received one message"
    );
    let status = server.stop();
    assert!(status.success());
}

#[tokio::test]
async fn per_recipient_limits_stop_sms_bombing_on_embedded_defaults() {
    bomb(&Backends::Embedded, "sms_bombing_embedded").await;
}

#[tokio::test]
async fn per_recipient_limits_stop_sms_bombing_across_redis() {
    let Some(backends) = shared_backends().await else {
        return;
    };
    bomb(&backends, "sms_bombing_redis").await;
    drop_schema(&backends).await;
}

// ---------------------------------------------------------------------------------
// SQL only through parameters.

/// SQL text passed through `format!` whose placeholders are not constants or one of the
/// identifiers the store validates: `(file, line, placeholder)`.
fn formatted_sql_with_values(file: &str, source: &str) -> Vec<(String, usize, String)> {
    const KEYWORDS: [&str; 9] = [
        "SELECT ", "INSERT ", "UPDATE ", "DELETE ", "WHERE ", "CREATE ", "DROP ", "ALTER ",
        "EXPLAIN ",
    ];
    // `schema` is checked to be a plain lower-case identifier before use; `filter` is a
    // column name chosen by the store's own code (checked below).
    const IDENTIFIERS: [&str; 2] = ["schema", "filter"];
    let mut found = Vec::new();
    let mut rest = source;
    let mut offset = 0;
    while let Some(at) = rest.find("format!(") {
        let start = offset + at + "format!(".len();
        let tail = source[start..].trim_start();
        let literal = if let Some(raw) = tail.strip_prefix("r#\"") {
            raw.split("\"#").next().unwrap_or("")
        } else if let Some(raw) = tail.strip_prefix("r\"") {
            raw.split('"').next().unwrap_or("")
        } else if let Some(plain) = tail.strip_prefix('"') {
            let mut end = 0;
            let bytes = plain.as_bytes();
            while end < bytes.len()
                && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\'))
            {
                end += 1;
            }
            &plain[..end]
        } else {
            ""
        };
        // The store writes SQL keywords in capitals; prose like "cannot create" is not SQL.
        if KEYWORDS.iter().any(|k| literal.contains(k)) {
            let line = source[..start].lines().count();
            let unescaped = literal.replace("{{", "").replace("}}", "");
            for piece in unescaped.split('{').skip(1) {
                let name = piece.split(['}', ':']).next().unwrap_or("").trim();
                let constant = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if !constant && !IDENTIFIERS.contains(&name) {
                    found.push((file.to_owned(), line, name.to_owned()));
                }
            }
        }
        offset = start;
        rest = &source[start..];
    }
    found
}

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading the source tree") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_sql_checker_catches_a_value_formatted_into_sql() {
    let bad = r#"let sql = format!("SELECT * FROM messages WHERE id = '{id}'");"#;
    assert_eq!(formatted_sql_with_values("x.rs", bad).len(), 1);
    let bad = r#"conn.execute(&format!("DELETE FROM t WHERE k = {}", key), [])"#;
    assert_eq!(formatted_sql_with_values("x.rs", bad).len(), 1);
    let fine = r#"format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1")"#;
    assert!(formatted_sql_with_values("x.rs", fine).is_empty());
    let not_sql = r#"format!("expected at most {n} recipients")"#;
    assert!(formatted_sql_with_values("x.rs", not_sql).is_empty());
}

#[test]
fn the_store_builds_sql_only_from_constants_and_parameters() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sms-store/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() >= 3, "sms-store sources found: {files:?}");
    let mut found = Vec::new();
    let mut sql_formats = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("reading");
        let name = file.display().to_string();
        found.extend(formatted_sql_with_values(&name, &text));
        sql_formats += text.matches("format!(").count();
        // The statement `select_one` runs must be written in the code: a literal or a
        // constant (an upper-case name), never a value built at run time.
        for call in text.split("select_one(").skip(1) {
            let args: Vec<&str> = call.splitn(3, ',').collect();
            if args.len() == 3 && !args[0].contains(':') {
                let statement = args[1].trim();
                let constant = !statement.is_empty()
                    && statement
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                assert!(
                    statement.starts_with('"') || constant,
                    "{name}: select_one's statement must be a literal or a constant, found {statement:?}"
                );
            }
        }
    }
    assert!(sql_formats > 0);
    assert!(found.is_empty(), "values formatted into SQL: {found:?}");
}
