//! The status page in a real browser: headless Chromium opens `/` after a simulated
//! outage and must show the vendors, the queue and the switch; a screenshot of it is
//! saved as `status-page.png` in the target directory.
//!
//! Chromium comes from the Debian `chromium` package (`.ci/run` installs it). Without
//! it the test says so and passes, except under `CI=true`, where it fails.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::VENDORS;
use crate::server::{Backends, Server, TOKEN};

/// The browser's command, if one is installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Runs the browser headless on `url` with `args`; its standard output.
fn browse(browser: &str, args: &[&str], url: &str) -> String {
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            // Virtual time waits for the page's fetches; 6 s covers a few refreshes.
            "--virtual-time-budget=6000",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("running the browser");
    assert!(
        output.status.success(),
        "{browser} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Where the screenshot goes: the target directory the tests were built in.
fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    std::fs::create_dir_all(&target).expect("the target directory");
    target.join("status-page.png")
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

#[tokio::test]
async fn the_status_page_shows_vendors_queue_and_the_switch_after_an_outage() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium is missing: .ci/run installs the Debian chromium package"
        );
        eprintln!("skipped: no chromium here (apt-get install -y chromium)");
        return;
    };
    let server = Server::start(&Backends::Embedded, VENDORS).await;
    let page = server
        .client
        .get(server.url("/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.text().await.expect("the page").contains("SMS gateway"),
        "the page is served without a token"
    );

    // The current vendor goes down: requests are queued, and the gateway switches.
    let r = server
        .client
        .put(server.url("/v1/vendors/aliyun/simulation"))
        .bearer_auth(TOKEN)
        .json(&json!({ "outage": true, "latency_ms": 1 }))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::OK);
    for i in 0..3 {
        let r = server
            .post(
                "/v1/messages",
                json!({ "template": "SMS_LOGIN", "args": ["123456"],
                        "recipients": [format!("+861390000010{i}")] }),
            )
            .await;
        assert!(r.status().is_success(), "send {i}: {}", r.status());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let switches = json_of(server.get("/v1/switches").await).await;
        if switches["switches"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
        {
            assert_eq!(switches["switches"][0]["from"], "aliyun", "{switches}");
            break;
        }
        assert!(Instant::now() < deadline, "no switch: {switches}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let url = format!("{}#token={TOKEN}", server.url("/"));
    let dom = browse(browser, &["--dump-dom"], &url);
    for vendor in ["aliyun", "tencent", "cloopen"] {
        assert!(
            dom.contains(&format!("data-vendor=\"{vendor}\"")),
            "no row for {vendor}:\n{dom}"
        );
    }
    assert!(dom.contains("cooling down until"), "aliyun rests:\n{dom}");
    // Spend against the tiers: Tencent's next tier and where it starts.
    let vendors = json_of(server.get("/v1/vendors").await).await;
    let tencent = &vendors["vendors"]
        .as_array()
        .expect("vendors")
        .iter()
        .find(|v| v["id"] == "tencent")
        .expect("tencent")["next_tier"];
    let next = format!(
        "{} from message {}",
        tencent["price"].as_str().expect("a price"),
        tencent["from_volume"].as_u64().expect("a volume")
    );
    assert!(dom.contains(&next), "the next tier, {next}:\n{dom}");
    assert!(dom.contains("aliyun → tencent"), "the switch:\n{dom}");
    assert!(dom.contains("data-status=\"queued\""), "the queue:\n{dom}");
    assert!(
        dom.contains("nothing waiting") || dom.contains("oldest queued message waiting"),
        "the oldest queued message's age:\n{dom}"
    );
    assert!(
        dom.contains("live requests go to tencent"),
        "the current vendor:\n{dom}"
    );
    // The chart's totals: the three messages went out, after failed calls to aliyun.
    assert!(dom.contains("data-series=\"sent\""), "the chart:\n{dom}");
    assert!(dom.contains(">3 sent<"), "three sent this hour:\n{dom}");
    let failed = dom
        .split("<span class=\"failed\">")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        failed >= 2,
        "the failed calls to aliyun are counted:\n{dom}"
    );

    let path = screenshot_path();
    let _ = std::fs::remove_file(&path);
    browse(
        browser,
        &[
            &format!("--screenshot={}", path.display()),
            "--window-size=1280,1000",
        ],
        &url,
    );
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "no screenshot at {}", path.display());
    eprintln!("status page screenshot: {}", path.display());
}
