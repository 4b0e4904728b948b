//! A local stand-in for the three vendors' HTTP APIs (feature `sandbox`).
//!
//! [`serve`] answers Aliyun `SendSms` and `QuerySendDetails` (`POST /` form or
//! `GET /?…`), Tencent Cloud `SendSms` and `PullSmsSendStatus` (`POST /` with
//! `X-TC-Action`) and Cloopen template SMS
//! (`POST /2013-12-26/Accounts/{sid}/SMS/TemplateSMS`) on one listener. It checks
//! signatures, timestamps and nonces the way each vendor does and answers a bad one in
//! that vendor's own error shape, so the real adapters can be tested end to end without
//! the network. Every accepted recipient is recorded ([`Delivery`]), in memory and, when
//! configured, as JSON lines in a file.
//!
//! Past the credentials each route checks what its real vendor checks ([`crate::rules`]),
//! in that vendor's answer: the template, signature and parameters approved (from the
//! [`SandboxConfig::templates`] catalogue, for the vendor name each route answers for;
//! an empty catalogue approves anything), and the vendor's per-number limits (on unless
//! [`SandboxConfig::per_number_limits`] is false). Tencent's `Fee` is the billed segments
//! of the signed text: the approved template's text with `TemplateParamSet` in place,
//! or the parameters alone when the text is not known.
//!
//! Faults are set per vendor with `PUT /_control/{vendor}` and a JSON [`FaultControls`]
//! (or [`SandboxHandle::set_faults`]): added latency, a rate of vendor errors, a rate of
//! throttling answers, and a full outage (HTTP 503). `GET /_control/{vendor}` reads them
//! back; `GET /_deliveries` lists what was delivered.
//!
//! A [`SandboxConfig`] in TOML (every table optional; the defaults are fixed fake
//! credentials that [`SandboxHandle::aliyun_config`] and its siblings hand to adapters):
//!
//! ```toml
//! delivery_log = "sandbox-deliveries.jsonl"
//! seed = 7
//! [aliyun]
//! access_key_id = "local-id"
//! access_key_secret = "local-secret"
//! ```
//!
//! and a fault set while it runs:
//! `curl -X PUT localhost:PORT/_control/tencent -d '{"throttle_rate": 0.3, "latency_ms": 200}'`.
//!
//! With templates, each route approves what the catalogue maps for its vendor name
//! (`aliyun`, `tencent`, `cloopen`, or the `vendor` key of its table), signed with the
//! mapping's `sign_name` or the route's (`Sandbox`, or the `sign_name` key of its table):
//!
//! ```toml
//! per_number_limits = true
//! [templates.login_code]
//! text = "您的验证码是{1}，{2}分钟内有效。"
//! vendors.aliyun = { id = "SMS_154950909", params = ["code", "minutes"] }
//! vendors.tencent = { id = "1860001", sign_name = "腾讯云" }
//! ```
//!
//! Like the real vendors, each route can push delivery receipts, in its vendor's format,
//! to the address registered with it (the gateway's receipt endpoint), a while after
//! each accepted send:
//!
//! ```toml
//! [receipts]
//! aliyun = "http://127.0.0.1:8080/v1/receipts/aliyun/SECRET"
//! delivery_rate = 0.95
//! delay_ms = 200
//! ```
//!
//! The same routes answer the receipt pulls: Aliyun `QuerySendDetails` and Tencent Cloud
//! `PullSmsSendStatus`, behind the same signature checks and faults, refusing bad
//! parameters in each vendor's codes. Each accepted recipient's fate is drawn once at
//! `delivery_rate` and is due `delay_ms` after the send, for pushes and pulls alike:
//! Tencent's queue hands each status out once when due; Aliyun answers "waiting"
//! (`SendStatus` 1) until then. Pulls work whether or not the route also pushes. What
//! the pulls answer from is bounded (the newest 100 000 sends per route).
//!
//! Which numbers the sandbox refuses: a `+86` number that is not a mobile (11 digits
//! starting with 1), like the landline `+862012345678`, as the real vendors do.

mod config;
mod handlers;
mod receipts;
mod statuses;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use serde::{Deserialize, Serialize};
use sms_core::VendorId;
use sms_core::sync::lock;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{
    AliyunCredentials, CloopenCredentials, ReceiptPushes, SandboxConfig, TencentCredentials,
};

use crate::http::{AliyunConfig, CloopenConfig, TencentConfig};
use crate::rules::{Approvals, PerNumberLimits, Protocol};

/// One of the vendors the sandbox speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxVendor {
    /// Aliyun `SendSms`.
    Aliyun,
    /// Tencent Cloud `SendSms`.
    Tencent,
    /// Cloopen template SMS.
    Cloopen,
}

impl SandboxVendor {
    /// The vendor's name, as in the control path and the delivery log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aliyun => "aliyun",
            Self::Tencent => "tencent",
            Self::Cloopen => "cloopen",
        }
    }

    /// The protocol the vendor's route speaks.
    pub fn protocol(self) -> Protocol {
        match self {
            Self::Aliyun => Protocol::Aliyun,
            Self::Tencent => Protocol::Tencent,
            Self::Cloopen => Protocol::Cloopen,
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Aliyun => 0,
            Self::Tencent => 1,
            Self::Cloopen => 2,
        }
    }
}

impl FromStr for SandboxVendor {
    type Err = SandboxError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aliyun" => Ok(Self::Aliyun),
            "tencent" => Ok(Self::Tencent),
            "cloopen" => Ok(Self::Cloopen),
            other => Err(SandboxError::UnknownVendor(other.to_owned())),
        }
    }
}

/// Faults injected into one vendor's answers.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultControls {
    /// Added before every answer except an outage's, in milliseconds. An accepted
    /// message is recorded before the wait, as a vendor that answers late still sends.
    pub latency_ms: u64,
    /// Share of otherwise valid requests answered with the vendor's system error (0 to 1).
    pub error_rate: f64,
    /// Share of otherwise valid requests answered with the vendor's throttling code.
    pub throttle_rate: f64,
    /// Every request is answered with HTTP 503 at once.
    pub outage: bool,
}

impl FaultControls {
    /// Checks the rates are within 0 and 1.
    pub fn validate(&self) -> Result<(), SandboxError> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("throttle_rate", self.throttle_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(SandboxError::InvalidFaults(format!(
                    "{name} must be between 0 and 1, found {rate}"
                )));
            }
        }
        Ok(())
    }
}

/// One recipient of one accepted message, as recorded by the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `aliyun`, `tencent` or `cloopen`.
    pub vendor: String,
    /// The recipient, E.164.
    pub recipient: String,
    /// The id the sandbox answered with (`BizId`, `SerialNo`, `smsMessageSid`).
    pub vendor_message_id: String,
    /// The caller's reference, when the protocol carries one (`OutId`, `SessionContext`).
    pub reference: Option<String>,
    /// Template id or code.
    pub template: String,
    /// The signature the message went out with, when the protocol carries one
    /// (Cloopen binds it to the template).
    #[serde(default)]
    pub sign_name: Option<String>,
    /// Template arguments, in order (Aliyun's named ones in the approved template's
    /// order, or in name order when the sandbox approves anything).
    pub args: Vec<String>,
    /// When the sandbox accepted it.
    pub time: DateTime<Utc>,
}

/// What can go wrong running the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The delivery log cannot be opened or written, or the listener failed.
    #[error("sandbox I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Fault controls out of range.
    #[error("invalid fault controls: {0}")]
    InvalidFaults(String),
    /// A vendor name the sandbox does not speak for.
    #[error("unknown vendor {0:?}; expected aliyun, tencent or cloopen")]
    UnknownVendor(String),
    /// A setting out of range, named.
    #[error("invalid sandbox configuration: {0}")]
    InvalidConfig(String),
}

/// What one route's vendor checks past the credentials.
pub(crate) struct Route {
    pub(crate) approvals: Approvals,
    pub(crate) limits: PerNumberLimits,
}

/// Shared by every request handler.
pub(crate) struct SandboxState {
    pub(crate) config: SandboxConfig,
    routes: [Route; 3],
    faults: Mutex<[FaultControls; 3]>,
    deliveries: Mutex<Vec<Delivery>>,
    log: Mutex<Option<std::fs::File>>,
    /// Nonces seen, with when: Aliyun refuses a nonce reused within 15 minutes.
    nonces: Mutex<HashMap<String, DateTime<Utc>>>,
    rng: Mutex<StdRng>,
    /// Draws each accepted recipient's fate, apart from the fault draws.
    fate_rng: Mutex<StdRng>,
    /// Each accepted send's fate, for the pull APIs.
    statuses: statuses::SendStatuses,
    next_id: AtomicU64,
    /// Pushes delivery receipts.
    client: reqwest::Client,
}

/// How a request's fault draw came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Error,
    Throttle,
    Normal,
}

impl SandboxState {
    fn new(config: SandboxConfig, log: Option<std::fs::File>) -> Self {
        let route = |vendor: SandboxVendor, name: &VendorId, sign_name: &str| {
            let protocol = vendor.protocol();
            Route {
                approvals: Approvals::from_catalogue(protocol, &config.templates, name, sign_name),
                limits: PerNumberLimits::new(protocol),
            }
        };
        let routes = [
            route(
                SandboxVendor::Aliyun,
                &config.aliyun.vendor,
                &config.aliyun.sign_name,
            ),
            route(
                SandboxVendor::Tencent,
                &config.tencent.vendor,
                &config.tencent.sign_name,
            ),
            // Cloopen checks no signature apart from the template.
            route(SandboxVendor::Cloopen, &config.cloopen.vendor, ""),
        ];
        Self {
            routes,
            faults: Mutex::new([FaultControls::default(); 3]),
            deliveries: Mutex::new(Vec::new()),
            log: Mutex::new(log),
            nonces: Mutex::new(HashMap::new()),
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            fate_rng: Mutex::new(StdRng::seed_from_u64(!config.seed)),
            statuses: statuses::SendStatuses::new(statuses::MAX_KEPT),
            next_id: AtomicU64::new(0),
            client: reqwest::Client::new(),
            config,
        }
    }

    /// What `vendor`'s route checks past the credentials.
    pub(crate) fn route(&self, vendor: SandboxVendor) -> &Route {
        &self.routes[vendor.index()]
    }

    pub(crate) fn faults(&self, vendor: SandboxVendor) -> FaultControls {
        lock(&self.faults)[vendor.index()]
    }

    /// Draws whether this request fails, is throttled, or goes through.
    pub(crate) fn draw(&self, vendor: SandboxVendor) -> Fate {
        let f = self.faults(vendor);
        let mut rng = lock(&self.rng);
        // Rates of 0 and 1 never consult the generator's value in a way that could
        // flip them: `random` is in [0, 1).
        if rng.random::<f64>() < f.error_rate {
            Fate::Error
        } else if rng.random::<f64>() < f.throttle_rate {
            Fate::Throttle
        } else {
            Fate::Normal
        }
    }

    pub(crate) fn latency(&self, vendor: SandboxVendor) -> Duration {
        Duration::from_millis(self.faults(vendor).latency_ms)
    }

    /// Remembers a nonce; false if it was seen within `window` (a replay). Older nonces
    /// are forgotten, so a long-running sandbox does not grow without bound.
    pub(crate) fn fresh_nonce(&self, nonce: &str, now: DateTime<Utc>, window: Duration) -> bool {
        const PRUNE_ABOVE: usize = 10_000;
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let mut nonces = lock(&self.nonces);
        if nonces.len() > PRUNE_ABOVE {
            nonces.retain(|_, seen| now - *seen <= window);
        }
        match nonces.get(nonce) {
            Some(seen) if now - *seen <= window => false,
            _ => {
                nonces.insert(nonce.to_owned(), now);
                true
            }
        }
    }

    /// A new id, unique within this sandbox run.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records accepted recipients, in memory and in the log file.
    pub(crate) fn record(&self, deliveries: Vec<Delivery>) {
        if let Some(file) = lock(&self.log).as_mut() {
            for d in &deliveries {
                let line = serde_json::to_string(d).expect("a delivery serialises");
                // A failed write must not fail the send the client sees succeed: the
                // sandbox keeps the in-memory record and says so on stderr.
                if let Err(e) = writeln!(file, "{line}").and_then(|()| file.flush()) {
                    tracing::error!(error = %e, "sandbox: cannot append to the delivery log");
                }
            }
        }
        let fates = self.draw_fates(&deliveries);
        self.push_receipts(&deliveries, &fates);
        self.keep_statuses(&deliveries, &fates);
        lock(&self.deliveries).extend(deliveries);
    }
}

/// A running sandbox. Dropping it leaves the server running until the runtime stops;
/// call [`SandboxHandle::stop`] to end it.
pub struct SandboxHandle {
    addr: SocketAddr,
    state: Arc<SandboxState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for SandboxHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Starts the sandbox on `listener` and returns at once with a handle to it.
pub async fn serve(
    listener: TcpListener,
    config: SandboxConfig,
) -> Result<SandboxHandle, SandboxError> {
    let rate = config.receipts.delivery_rate;
    if !(0.0..=1.0).contains(&rate) {
        return Err(SandboxError::InvalidConfig(format!(
            "receipts.delivery_rate: expected a share from 0 to 1, found {rate}"
        )));
    }
    let addr = listener.local_addr()?;
    let log = match &config.delivery_log {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None => None,
    };
    let state = Arc::new(SandboxState::new(config, log));
    let router = handlers::router(Arc::clone(&state));
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(SandboxHandle {
        addr,
        state,
        shutdown: Some(shutdown),
        task,
    })
}

impl SandboxHandle {
    /// The address the sandbox listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`, the base URL to give an adapter.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets one vendor's faults (the same as `PUT /_control/{vendor}`).
    pub fn set_faults(
        &self,
        vendor: SandboxVendor,
        faults: FaultControls,
    ) -> Result<(), SandboxError> {
        faults.validate()?;
        lock(&self.state.faults)[vendor.index()] = faults;
        Ok(())
    }

    /// One vendor's current faults.
    pub fn faults(&self, vendor: SandboxVendor) -> FaultControls {
        self.state.faults(vendor)
    }

    /// Every delivery so far, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.state.deliveries).clone()
    }

    /// An Aliyun adapter configuration pointing here, with the accepted credentials.
    pub fn aliyun_config(&self) -> AliyunConfig {
        let c = &self.state.config.aliyun;
        AliyunConfig {
            base_url: format!("{}/", self.base_url()),
            access_key_id: c.access_key_id.clone(),
            access_key_secret: c.access_key_secret.clone(),
            sign_name: c.sign_name.clone(),
            ..AliyunConfig::default()
        }
    }

    /// A Tencent Cloud adapter configuration pointing here, with the accepted credentials.
    pub fn tencent_config(&self) -> TencentConfig {
        let c = &self.state.config.tencent;
        TencentConfig {
            base_url: format!("{}/", self.base_url()),
            secret_id: c.secret_id.clone(),
            secret_key: c.secret_key.clone(),
            sdk_app_id: c.sdk_app_id.clone(),
            sign_name: c.sign_name.clone(),
            ..TencentConfig::default()
        }
    }

    /// A Cloopen adapter configuration pointing here, with the accepted credentials.
    pub fn cloopen_config(&self) -> CloopenConfig {
        let c = &self.state.config.cloopen;
        CloopenConfig {
            base_url: self.base_url(),
            account_sid: c.account_sid.clone(),
            auth_token: c.auth_token.clone(),
            app_id: c.app_id.clone(),
            ..CloopenConfig::default()
        }
    }

    /// Stops accepting requests, lets answers in flight finish for up to two seconds,
    /// then ends the server.
    pub async fn stop(mut self) -> Result<(), SandboxError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(Duration::from_secs(2), &mut self.task).await {
            Ok(Ok(result)) => result.map_err(SandboxError::Io),
            // The server task panicked or was cancelled: nothing left to stop.
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                self.task.abort();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_rates_outside_zero_to_one_are_refused() {
        let bad = FaultControls {
            error_rate: 1.5,
            ..FaultControls::default()
        };
        let e = bad.validate().unwrap_err();
        assert!(e.to_string().contains("error_rate"), "{e}");
        let bad = FaultControls {
            throttle_rate: -0.1,
            ..FaultControls::default()
        };
        assert!(bad.validate().is_err());
        assert!(FaultControls::default().validate().is_ok());
    }

    #[test]
    fn sandbox_config_debug_hides_credentials() {
        let debug = format!("{:?}", SandboxConfig::default());
        assert!(!debug.contains("sandbox-aliyun-secret"), "{debug}");
        assert!(!debug.contains("sandbox-tencent-key"), "{debug}");
        assert!(!debug.contains("sandbox-cloopen-token"), "{debug}");
    }

    #[test]
    fn a_nonce_is_refused_within_its_window_and_forgotten_after() {
        let state = SandboxState::new(SandboxConfig::default(), None);
        let window = Duration::from_secs(900);
        let t0 = Utc::now();
        assert!(state.fresh_nonce("n1", t0, window));
        assert!(!state.fresh_nonce("n1", t0 + chrono::Duration::seconds(899), window));
        assert!(state.fresh_nonce("n2", t0, window));
        // After the window the vendor no longer remembers it.
        assert!(state.fresh_nonce("n1", t0 + chrono::Duration::seconds(901), window));
    }

    #[test]
    fn rates_of_zero_and_one_are_never_and_always() {
        let state = SandboxState::new(SandboxConfig::default(), None);
        for _ in 0..200 {
            assert_eq!(state.draw(SandboxVendor::Aliyun), Fate::Normal);
        }
        lock(&state.faults)[SandboxVendor::Cloopen.index()] = FaultControls {
            throttle_rate: 1.0,
            ..FaultControls::default()
        };
        for _ in 0..200 {
            assert_eq!(state.draw(SandboxVendor::Cloopen), Fate::Throttle);
        }
    }

    #[test]
    fn the_documented_toml_parses_and_keeps_other_defaults() {
        let c: SandboxConfig = toml::from_str(
            r#"
            delivery_log = "sandbox-deliveries.jsonl"
            seed = 7
            [aliyun]
            access_key_id = "local-id"
            access_key_secret = "local-secret"
            "#,
        )
        .unwrap();
        assert_eq!(c.aliyun.access_key_id, "local-id");
        assert_eq!(c.aliyun.access_key_secret.expose(), "local-secret");
        assert_eq!(c.seed, 7);
        assert_eq!(
            c.tencent.secret_id,
            SandboxConfig::default().tencent.secret_id
        );
        assert!(toml::from_str::<SandboxConfig>("sede = 7").is_err());
        assert!(c.per_number_limits);
        assert!(c.templates.is_pass_through());
        assert_eq!(c.aliyun.vendor.as_str(), "aliyun");
        assert_eq!(c.aliyun.sign_name, "Sandbox");
    }

    #[test]
    fn the_documented_catalogue_parses() {
        let c: SandboxConfig = toml::from_str(
            r#"
            per_number_limits = true
            [templates.login_code]
            text = "您的验证码是{1}，{2}分钟内有效。"
            vendors.aliyun = { id = "SMS_154950909", params = ["code", "minutes"] }
            vendors.tencent = { id = "1860001", sign_name = "腾讯云" }
            "#,
        )
        .unwrap();
        let state = SandboxState::new(c, None);
        let tencent = &state.route(SandboxVendor::Tencent).approvals;
        assert_eq!(tencent.template("1860001").unwrap().sign_name, "腾讯云");
        let aliyun = &state.route(SandboxVendor::Aliyun).approvals;
        assert_eq!(
            aliyun.template("SMS_154950909").unwrap().sign_name,
            "Sandbox"
        );
    }

    #[test]
    fn the_documented_templates_give_each_route_its_approvals() {
        let c: SandboxConfig = toml::from_str(
            r#"
            [aliyun]
            access_key_id = "local-id"
            access_key_secret = "local-secret"
            sign_name = "阿里云"
            [tencent]
            secret_id = "AKID"
            secret_key = "key"
            sdk_app_id = "1400"
            vendor = "tc"
            [templates.login_code]
            text = "您的验证码是{1}，{2}分钟内有效。"
            vendors.aliyun = { id = "SMS_154950909", params = ["code", "minutes"] }
            vendors.tc = { id = "1860001" }
            "#,
        )
        .unwrap();
        let state = SandboxState::new(c, None);
        let aliyun = &state.route(SandboxVendor::Aliyun).approvals;
        let approved = aliyun.template("SMS_154950909").unwrap();
        assert_eq!(approved.sign_name, "阿里云");
        assert_eq!(approved.params, ["code", "minutes"]);
        // The Tencent route answers for the name `tc`.
        let tencent = &state.route(SandboxVendor::Tencent).approvals;
        assert_eq!(tencent.template("1860001").unwrap().arg_count, Some(2));
        // Cloopen has no mapping in a catalogue that is not empty: it approves none.
        let cloopen = &state.route(SandboxVendor::Cloopen).approvals;
        assert!(!cloopen.is_lenient());
        assert!(cloopen.template("1860001").is_none());
    }

    #[test]
    fn vendor_names_parse() {
        assert_eq!(
            "tencent".parse::<SandboxVendor>().unwrap(),
            SandboxVendor::Tencent
        );
        assert!("twilio".parse::<SandboxVendor>().is_err());
    }
}
