//! Scenarios of `simulate`: the built-in presets, files, and the gateway configuration
//! each one runs with.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sms_core::{SmsRequest, Templates, VendorId};
use sms_failover::FailoverConfig;
use sms_limit::LimitConfig;
use sms_providers::simulated::{FaultKind, ScheduledFault, SimulationSettings};

use crate::config::{Config, SimulatedVendorConfig, VendorConfig};

/// A scenario: steady traffic, faults on a schedule, bursts, then a wait for the queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Shown in the report.
    pub name: String,
    /// How long traffic runs, in seconds.
    pub duration_s: f64,
    /// Steady requests per second.
    pub rate_per_s: u32,
    /// The global limit during the run (lower than production so a burst shows it).
    pub global_per_second: u32,
    /// Longest wait for the queue to empty after traffic stops, in seconds.
    pub settle_s: f64,
    /// Failures in a row that switch vendor.
    pub consecutive_failures: u32,
    /// Rest of a vendor after a switch, in seconds.
    pub cooldown_s: f64,
    /// First retry delay of queued messages, in milliseconds.
    pub backoff_base_ms: u64,
    /// Seed of the simulated vendors.
    pub seed: u64,
    /// Extra requests sent all at once.
    pub bursts: Vec<Burst>,
    /// Settings per simulated vendor (name → settings).
    pub vendors: BTreeMap<String, SimulationSettings>,
    /// Logical templates and which vendor has which; requests take them in turn. None:
    /// every request names the vendors' template `SMS_LOGIN` directly.
    pub templates: Templates,
    /// Whether the vendors push delivery receipts (the report then counts messages
    /// delivered to handsets).
    pub receipts: bool,
    /// Receipts per vendor its delivery rate is judged over; 0 turns receipt-aware
    /// failover off.
    pub receipt_window: u32,
    /// Whether to run the scenario a second time without receipt-aware failover and
    /// print both share of messages delivered to handsets.
    pub compare_without_receipt_failover: bool,
}

/// A burst of requests at one moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// When, in seconds from the start.
    pub at_s: f64,
    /// How many requests.
    pub requests: u32,
    /// How many numbers the burst goes to, taken in turn (absent: each request its own):
    /// a few numbers asked for many codes meet the vendors' per-number limits.
    #[serde(default)]
    pub recipients: Option<u32>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self::preset("default").unwrap_or_else(|| unreachable!("the default preset exists"))
    }
}

fn vendor_settings(latency_ms: u64, jitter_ms: u64, error_rate: f64) -> SimulationSettings {
    SimulationSettings {
        latency_ms,
        jitter_ms,
        error_rate,
        ..SimulationSettings::default()
    }
}

impl Scenario {
    /// Names of the built-in scenarios.
    pub const PRESETS: [&'static str; 6] =
        ["default", "steady", "flaky", "mapping", "outage", "silent"];

    /// A built-in scenario by name.
    pub fn preset(name: &str) -> Option<Self> {
        let mut vendors = BTreeMap::new();
        vendors.insert("aliyun".to_owned(), vendor_settings(20, 10, 0.0005));
        vendors.insert("tencent".to_owned(), vendor_settings(30, 15, 0.0005));
        vendors.insert("cloopen".to_owned(), vendor_settings(40, 20, 0.0005));
        let mut s = Self {
            name: name.to_owned(),
            duration_s: 12.0,
            rate_per_s: 200,
            global_per_second: 500,
            settle_s: 15.0,
            consecutive_failures: 2,
            cooldown_s: 3.0,
            backoff_base_ms: 250,
            seed: 7,
            bursts: vec![Burst {
                at_s: 9.0,
                requests: 1500,
                recipients: None,
            }],
            vendors,
            templates: Templates::default(),
            receipts: false,
            receipt_window: FailoverConfig::default().receipt_window,
            compare_without_receipt_failover: false,
        };
        match name {
            // The cheapest vendor (Aliyun at this volume) goes down from 3 s to 7 s.
            "default" => {
                if let Some(aliyun) = s.vendors.get_mut("aliyun") {
                    aliyun.schedule = vec![ScheduledFault::new(3, 7, FaultKind::Outage)];
                }
            }
            "steady" => s.bursts.clear(),
            // Every vendor errs now and then and Tencent is slow.
            "flaky" => {
                for v in s.vendors.values_mut() {
                    v.error_rate = 0.05;
                    v.throttle_rate = 0.02;
                }
                if let Some(t) = s.vendors.get_mut("tencent") {
                    t.latency_ms = 900;
                    t.jitter_ms = 400;
                }
            }
            // Real vendors' rules: `notice` is not approved at the cheapest vendor, and
            // a burst asks 20 numbers for 400 codes. Expect detours, per-number refusals
            // answered to the callers, and no switch and no dead message.
            "mapping" => {
                s.bursts = vec![Burst {
                    at_s: 3.0,
                    requests: 400,
                    recipients: Some(20),
                }];
                s.templates = mapping_templates();
                // What is left waits for the vendors' per-number windows (a minute and
                // more): the run does not wait for it.
                s.settle_s = 5.0;
            }
            // Every vendor is down from 1 s to 6 s, at 300 requests a second and 100 ms
            // per call. Expect "all vendors unavailable" once, every message kept, and
            // the queue drained once the vendors are back.
            "outage" => {
                s.rate_per_s = 300;
                s.duration_s = 10.0;
                s.bursts.clear();
                for v in s.vendors.values_mut() {
                    v.latency_ms = 100;
                    v.jitter_ms = 20;
                    v.schedule = vec![ScheduledFault::new(1, 6, FaultKind::Outage)];
                }
                // What waited drains at about 90% of the 500/s limit once a vendor is
                // back, after the vendors' last rests (up to 6 s) end.
                s.settle_s = 30.0;
            }
            // A silent failure: from 5 s on, the cheapest vendor (Aliyun) still accepts
            // every message, but only 40% reach the handsets, and only its receipts
            // tell. Expect a switch driven by the receipts, and the run repeated
            // without receipt-aware failover for comparison.
            "silent" => {
                s.duration_s = 20.0;
                s.bursts.clear();
                s.receipts = true;
                s.compare_without_receipt_failover = true;
                s.cooldown_s = 10.0;
                for v in s.vendors.values_mut() {
                    v.receipt_delay_ms = 500;
                }
                if let Some(aliyun) = s.vendors.get_mut("aliyun") {
                    let mut drop = ScheduledFault::new(5, 3600, FaultKind::Undelivered);
                    drop.rate = 0.6;
                    aliyun.schedule = vec![drop];
                }
                // Login codes, which a vendor that did not deliver them re-sends once
                // through another.
                s.templates = login_templates();
                // Receipts of the last sends, and of their re-sends, come half a second
                // after them.
                s.settle_s = 3.0;
            }
            _ => return None,
        }
        Some(s)
    }

    /// The request number `n` sends, to `to`: the templates taken in turn, or the
    /// vendors' `SMS_LOGIN` without templates.
    pub(super) fn request(&self, n: u64, to: &str) -> Option<SmsRequest> {
        let code = format!("{:06}", n % 1_000_000);
        let names: Vec<(&str, usize)> = self
            .templates
            .iter()
            .map(|(name, t)| (name, t.arg_count().unwrap_or(1)))
            .collect();
        if names.is_empty() {
            return SmsRequest::new("SMS_LOGIN", [code], [to]).ok();
        }
        let (name, args) = names[(n % names.len() as u64) as usize];
        SmsRequest::new(name, vec![code; args], [to]).ok()
    }

    /// Reads a scenario file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let s: Scenario = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        s.validate()?;
        Ok(s)
    }

    pub(super) fn validate(&self) -> Result<()> {
        if !(self.duration_s > 0.0 && self.duration_s <= 3600.0) {
            bail!(
                "duration_s: expected more than 0 and at most 3600, found {}",
                self.duration_s
            );
        }
        if self.global_per_second == 0 || self.consecutive_failures == 0 {
            bail!("global_per_second and consecutive_failures must be at least 1");
        }
        if self.vendors.is_empty() {
            bail!("vendors: expected at least one simulated vendor");
        }
        for (name, settings) in &self.vendors {
            VendorId::new(name).map_err(|e| anyhow::anyhow!("vendors.{name}: {}", e.problem))?;
            settings
                .validate()
                .map_err(|e| anyhow::anyhow!("vendors.{name}: {e}"))?;
        }
        Ok(())
    }

    /// The gateway's configuration for this scenario in `dir`: the embedded store, the
    /// in-process limiter at the scenario's global limit and no per-recipient windows
    /// (the requests go to distinct numbers anyway), quicker retries and drains than in
    /// production so the queue settles within the run, and the scenario's vendors with
    /// their built-in price lists.
    pub(super) fn config(&self, dir: &Path) -> Config {
        Config {
            sqlite_path: dir.join("simulate.db"),
            failover: FailoverConfig {
                consecutive_failures: self.consecutive_failures,
                cooldown: Duration::from_secs_f64(self.cooldown_s),
                backoff_base: Duration::from_millis(self.backoff_base_ms),
                backoff_max: Duration::from_millis(self.backoff_base_ms.max(2000)),
                drain_interval: Duration::from_millis(200),
                attempt_timeout: Duration::from_secs(2),
                receipt_window: self.receipt_window,
                ..FailoverConfig::default()
            },
            limit: LimitConfig {
                global_per_second: self.global_per_second,
                recipient_windows: Vec::new(),
                ..LimitConfig::default()
            },
            vendors: self
                .vendors
                .iter()
                .zip(0..)
                .map(|((name, simulation), order)| {
                    let vendor = VendorConfig::Simulated(SimulatedVendorConfig {
                        order,
                        fees: None,
                        simulation: simulation.clone(),
                    });
                    (name.clone(), vendor)
                })
                .collect(),
            templates: self.templates.clone(),
            ..Config::default()
        }
    }
}

/// `login_code` at every vendor, re-sent through another when undelivered.
fn login_templates() -> Templates {
    let mut templates: BTreeMap<String, sms_core::Template> = mapping_templates().into();
    templates.retain(|name, _| name == "login_code");
    Templates::new(templates).expect("the built-in templates are valid")
}

/// `login_code` at every vendor; `notice` at all but Aliyun, the cheapest.
fn mapping_templates() -> Templates {
    let login = |id: &str| sms_core::VendorTemplate {
        id: id.to_owned(),
        params: Vec::new(),
        sign_name: None,
    };
    let mut templates = BTreeMap::new();
    templates.insert(
        "login_code".to_owned(),
        sms_core::Template {
            text: Some("您的验证码是{1}，5分钟内有效。".to_owned()),
            vendors: [
                (
                    "aliyun",
                    sms_core::VendorTemplate {
                        params: vec!["code".to_owned()],
                        ..login("SMS_154950909")
                    },
                ),
                ("tencent", login("1860001")),
                ("cloopen", login("9001")),
            ]
            .into_iter()
            .map(|(v, t)| (VendorId::new(v).expect("a valid name"), t))
            .collect(),
            // A code the handset did not get goes once more through another vendor.
            resend_undelivered: true,
            // Codes take the global limit and the queue before notices.
            priority: sms_core::Priority::High,
        },
    );
    templates.insert(
        "notice".to_owned(),
        sms_core::Template {
            text: Some("您的订单{1}已发货。".to_owned()),
            vendors: [("tencent", login("1860002")), ("cloopen", login("9002"))]
                .into_iter()
                .map(|(v, t)| (VendorId::new(v).expect("a valid name"), t))
                .collect(),
            resend_undelivered: false,
            priority: sms_core::Priority::Normal,
        },
    );
    Templates::new(templates).expect("the built-in templates are valid")
}
