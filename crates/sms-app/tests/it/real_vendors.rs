//! The gateway with three real HTTP adapters pointed at `sms-app sandbox` survives an
//! outage of one vendor.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::{Backends, Server};

pub struct Sandbox {
    child: Child,
    pub base: String,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free local port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts `sms-app sandbox` on `port`, logging its deliveries in `dir`. With the
/// gateway's configuration `gateway` (TOML), the sandbox approves its templates and
/// signatures.
pub async fn start_sandbox(dir: &std::path::Path, port: u16, gateway: Option<&str>) -> Sandbox {
    start_sandbox_with(dir, port, gateway, None).await
}

/// [`start_sandbox`], with the sandbox's own settings (`--sandbox-config`) when given.
pub async fn start_sandbox_with(
    dir: &std::path::Path,
    port: u16,
    gateway: Option<&str>,
    settings: Option<&str>,
) -> Sandbox {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sms-app"));
    if let Some(gateway) = gateway {
        let path = dir.join("sandbox-gateway.toml");
        std::fs::write(&path, gateway).expect("writing the gateway configuration");
        command.arg("--config").arg(path);
    }
    command
        .env_remove("SMS_DATABASE_URL")
        .env_remove("SMS_REDIS_URL")
        .arg("sandbox");
    if let Some(settings) = settings {
        let path = dir.join("sandbox-settings.toml");
        std::fs::write(&path, settings).expect("writing the sandbox settings");
        command.arg("--sandbox-config").arg(path);
    }
    let child = command
        .args(["--listen", &format!("127.0.0.1:{port}")])
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
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
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

/// The gateway's configuration for the three real adapters pointed at the sandbox at
/// `base` with its default credentials, Aliyun and Tencent signing with `signatures`,
/// with quick retries and a long cooldown (a vendor that fails stays out).
pub fn sandbox_vendors(base: &str, signatures: [&str; 2]) -> String {
    let [aliyun, tencent] = signatures;
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
settings = {{ base_url = "{base}", access_key_id = "sandbox-aliyun-id", access_key_secret = "sandbox-aliyun-secret", sign_name = "{aliyun}" }}
[vendors.tencent]
kind = "tencent"
order = 1
settings = {{ base_url = "{base}", secret_id = "AKIDsandbox", secret_key = "sandbox-tencent-key", sdk_app_id = "1400000000", sign_name = "{tencent}" }}
[vendors.cloopen]
kind = "cloopen"
order = 2
settings = {{ base_url = "{base}", account_sid = "sandboxaccountsid", auth_token = "sandbox-cloopen-token", app_id = "sandboxapp" }}
"#
    )
}

fn message(recipient: &str) -> Value {
    json!({ "template": "SMS_LOGIN", "args": ["123456"], "recipients": [recipient] })
}

#[tokio::test]
async fn real_adapters_against_the_sandbox_survive_a_vendor_outage() {
    let dir = tempfile::tempdir().expect("dir");
    let sandbox = start_sandbox(dir.path(), free_port(), None).await;
    let server = Server::start(
        &Backends::Embedded,
        &sandbox_vendors(&sandbox.base, ["Test", "Test"]),
    )
    .await;

    let r = server.post("/v1/messages", message("+8613800000101")).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", server.log());
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["vendor"], "aliyun");

    // Aliyun's endpoint starts answering 503.
    let r = reqwest::Client::new()
        .put(format!("{}/_control/aliyun", sandbox.base))
        .json(&json!({ "outage": true }))
        .send()
        .await
        .expect("control");
    assert!(r.status().is_success());

    let mut ids = Vec::new();
    for i in 0..6 {
        let r = server
            .post("/v1/messages", message(&format!("+86138000002{i:02}")))
            .await;
        let code = r.status();
        let body: Value = r.json().await.expect("json");
        assert!(
            code == StatusCode::OK || code == StatusCode::ACCEPTED,
            "{code} {body}"
        );
        if i >= 2 {
            assert_eq!(
                code,
                StatusCode::OK,
                "after the switch sends go through: {body}"
            );
            assert_ne!(body["vendor"], "aliyun");
        }
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    // Every message, including those queued during the outage, ends up sent by another vendor.
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in &ids {
        loop {
            let m: Value = server
                .get(&format!("/v1/messages/{id}"))
                .await
                .json()
                .await
                .unwrap_or(Value::Null);
            if m["status"] == "sent" {
                assert_ne!(m["vendor"], "aliyun");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "message {id} not sent: {m}\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let deliveries =
        std::fs::read_to_string(dir.path().join("sandbox.jsonl")).expect("sandbox log");
    assert_eq!(
        deliveries.lines().count(),
        7,
        "one delivery per message:\n{deliveries}"
    );
    let status = server.stop();
    assert!(status.success());
}
