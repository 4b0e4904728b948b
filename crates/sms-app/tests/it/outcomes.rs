//! Driving the real binary with bursts of sends, and accounting for every accepted
//! message afterwards: delivered (in the vendors' delivery logs, written outside the
//! gateway process), visibly dead or expired, or lost; and how often each was sent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::Server;

/// Answers to a burst of sends.
#[derive(Debug, Default)]
pub struct Load {
    /// Ids of accepted messages (200 and 202).
    pub accepted: Vec<String>,
    /// 200 answers.
    pub sent: usize,
    /// 202 answers, by queue reason.
    pub queued: HashMap<String, usize>,
    /// Other answers, by status code and error code.
    pub refused: HashMap<String, usize>,
}

impl Load {
    pub fn queued_total(&self) -> usize {
        self.queued.values().sum()
    }
}

pub fn message(recipient: &str) -> Value {
    json!({ "template": "SMS_LOGIN", "args": ["123456"], "recipients": [recipient] })
}

/// Posts `bodies`, `concurrency` at a time, and sorts the answers.
pub async fn load(server: &Server, bodies: Vec<Value>, concurrency: usize) -> Load {
    let mut out = Load::default();
    for chunk in bodies.chunks(concurrency) {
        let answers = join_all(chunk.iter().map(|b| {
            bounded(
                server,
                "POST /v1/messages",
                server.post("/v1/messages", b.clone()),
            )
        }))
        .await;
        for r in answers {
            let code = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            match code {
                StatusCode::OK | StatusCode::ACCEPTED => {
                    let id = body["id"].as_str().expect("accepted answers carry an id");
                    out.accepted.push(id.to_owned());
                    if code == StatusCode::OK {
                        out.sent += 1;
                    } else {
                        let reason = body["reason"].as_str().unwrap_or("?").to_owned();
                        *out.queued.entry(reason).or_default() += 1;
                    }
                }
                other => {
                    let key = format!(
                        "{} {}",
                        other.as_u16(),
                        body["error"]["code"].as_str().unwrap_or("?")
                    );
                    *out.refused.entry(key).or_default() += 1;
                }
            }
        }
    }
    out
}

/// Awaits `f`, failing the test with the server's log if it takes over a minute: a hung
/// request is a finding, not a reason to hang the suite.
pub async fn bounded<T>(server: &Server, what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} got no answer within 60 s\n{}", tail(&server.log())),
    }
}

/// `GET /v1/queue`, or `None` when it does not answer 200.
pub async fn queue_stats(server: &Server) -> Option<Value> {
    let r = server
        .client
        .get(server.url("/v1/queue"))
        .bearer_auth(crate::server::TOKEN)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .ok()?;
    if r.status() != StatusCode::OK {
        return None;
    }
    r.json().await.ok()
}

pub fn count(stats: &Value, status: &str) -> u64 {
    stats[status].as_u64().unwrap_or(0)
}

/// Polls until nothing is queued or leased; returns the final counts.
pub async fn wait_settled(server: &Server, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(stats) = queue_stats(server).await {
            if count(&stats, "queued") == 0 && count(&stats, "leased") == 0 {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "the queue did not settle: {stats}\n{}",
                tail(&server.log())
            );
        } else {
            assert!(
                Instant::now() < deadline,
                "the queue did not answer\n{}",
                tail(&server.log())
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The last lines of a server log, for failure messages.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Deliveries per message id, over every delivery log given.
pub fn deliveries(paths: &[PathBuf]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for path in paths {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            // A SIGKILL can cut the last line short; such a line is not a delivery.
            let Ok(record) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let Some(id) = record["message_id"].as_str() {
                *out.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    out
}

/// What became of the accepted messages.
#[derive(Debug, Default, serde::Serialize)]
pub struct Outcome {
    pub accepted: usize,
    pub delivered: usize,
    pub dead: usize,
    pub expired: usize,
    /// Accepted, not delivered and not visibly dead or expired.
    pub lost: Vec<String>,
    /// Deliveries beyond the first, summed over messages.
    pub duplicates: usize,
    /// Of those, deliveries of messages flagged `may_duplicate`: a timeout, or a lease
    /// that lapsed and was claimed again.
    pub duplicates_flagged: usize,
}

/// Classifies every accepted id from the delivery logs and `GET /v1/messages/{id}`.
pub async fn outcome(server: &Server, accepted: &[String], logs: &[PathBuf]) -> Outcome {
    let seen = deliveries(logs);
    let mut out = Outcome {
        accepted: accepted.len(),
        ..Outcome::default()
    };
    for id in accepted {
        let delivered = seen.get(id).copied().unwrap_or(0);
        let status: Value = match bounded(
            server,
            "GET /v1/messages/{id}",
            server.get(&format!("/v1/messages/{id}")),
        )
        .await
        {
            r if r.status() == StatusCode::OK => r.json().await.unwrap_or(Value::Null),
            _ => Value::Null,
        };
        if delivered > 0 {
            out.delivered += 1;
            if delivered > 1 {
                out.duplicates += delivered - 1;
                if status["may_duplicate"] == true {
                    out.duplicates_flagged += delivered - 1;
                }
            }
        } else if status["status"] == "dead" {
            out.dead += 1;
        } else if status["status"] == "expired" {
            out.expired += 1;
        } else {
            out.lost.push(format!("{id}: {status}"));
        }
    }
    out
}

pub fn figures(scenario: &str, value: Value) {
    println!(
        "chaos-figures {}",
        json!({ "scenario": scenario, "figures": value })
    );
}
