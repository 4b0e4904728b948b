//! How a simulated vendor behaves: the vendor API it speaks like, its signature and
//! per-number limits, latency, fault rates, outage switch, scripted windows.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::rules::Protocol;

/// A simulated vendor's behaviour. Every field has a default, so a TOML table names only
/// what it changes; the defaults are a healthy vendor that answers at once.
///
/// The four rates are probabilities per send and are exclusive of one another: a send
/// hangs with `timeout_rate`, else fails with `error_rate`, else is throttled with
/// `throttle_rate`, else is rejected with `reject_rate`, else is delivered. They must add
/// up to at most 1.
///
/// A send the faults let through then meets what the real vendor checks
/// ([`crate::rules`]): the template, signature and arguments approved (see
/// [`SimulatedVendor::with_templates`](super::SimulatedVendor::with_templates)), and
/// the vendor's per-number limits unless `per_number_limits = false`.
///
/// ```toml
/// protocol = "tencent"
/// sign_name = "腾讯云"
/// latency_ms = 80
/// jitter_ms = 40
/// error_rate = 0.01
/// schedule = [
///     { from_s = 20, to_s = 60, fault = "outage" },
///     { from_s = 90, to_s = 120, fault = "slow", latency_ms = 1500 },
///     { from_s = 150, to_s = 160, fault = "throttle", rate = 0.5 },
/// ]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulationSettings {
    /// The vendor API the vendor behaves as: its codes, its per-number windows, whether
    /// it reports the billed segments (Tencent's `Fee`). Unset, a vendor named `aliyun`,
    /// `tencent` or `cloopen` speaks its name's protocol and keeps the one it has when
    /// the settings are replaced; a vendor with another name must set it.
    pub protocol: Option<Protocol>,
    /// The signature the vendor signs with when a template has none of its own, approved
    /// with every template. Unset: no signature, and the text is billed without one.
    pub sign_name: Option<String>,
    /// Whether the vendor applies its default per-number limits (Aliyun 1 a minute, 5 an
    /// hour, 10 a day per signature and number; Tencent the same content once per 30 s
    /// and 10 a day per number; Cloopen the same template once a minute and 10 a day).
    /// On by default, as at the real vendors; off for load tests that send many messages
    /// to a few numbers.
    pub per_number_limits: bool,
    /// Base time to answer, in milliseconds.
    pub latency_ms: u64,
    /// Extra time to answer, drawn uniformly from `0..=jitter_ms` for each send.
    pub jitter_ms: u64,
    /// Share of sends that fail with [`VendorError::Transient`](sms_core::VendorError::Transient) (like an HTTP 503).
    pub error_rate: f64,
    /// Share of sends that fail with [`VendorError::Throttled`](sms_core::VendorError::Throttled).
    pub throttle_rate: f64,
    /// Share of sends that hang: the vendor never answers (it sleeps an hour and then
    /// reports [`VendorError::TimedOut`](sms_core::VendorError::TimedOut)); the caller's
    /// own timeout is expected to cut it short.
    pub timeout_rate: f64,
    /// Whether a send that hangs was nevertheless delivered (recorded in the delivery log
    /// before hanging): the vendor took the message and the answer was lost. This is why
    /// a timeout is an unknown outcome and not a clean failure.
    pub timeout_delivers: bool,
    /// Share of sends refused for good with [`VendorError::Rejected`](sms_core::VendorError::Rejected).
    pub reject_rate: f64,
    /// When true every send fails at once with a transient "outage" error, like a vendor
    /// whose endpoint refuses connections.
    pub outage: bool,
    /// Scripted fault windows, relative to the vendor's start.
    pub schedule: Vec<ScheduledFault>,
    /// Share of accepted recipients the handset gets: the others' delivery receipts say
    /// undelivered. 1 (all) by default.
    pub delivery_rate: f64,
    /// How long after the send a delivery receipt comes, in milliseconds.
    pub receipt_delay_ms: u64,
    /// A silent failure: sends are accepted and billed, but nothing is delivered and no
    /// receipt ever comes.
    pub silent: bool,
}

/// What the receipts of a send accepted now say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReceiptPlan {
    /// Share of recipients delivered.
    pub delivery_rate: f64,
    /// No receipt comes at all.
    pub silent: bool,
    /// When the receipts come, after the send.
    pub delay: std::time::Duration,
}

impl Default for SimulationSettings {
    fn default() -> Self {
        Self {
            protocol: None,
            sign_name: None,
            per_number_limits: true,
            latency_ms: 0,
            jitter_ms: 0,
            error_rate: 0.0,
            throttle_rate: 0.0,
            timeout_rate: 0.0,
            timeout_delivers: false,
            reject_rate: 0.0,
            outage: false,
            schedule: Vec::new(),
            delivery_rate: 1.0,
            receipt_delay_ms: 1000,
            silent: false,
        }
    }
}

impl SimulationSettings {
    /// What the receipts of a send accepted `elapsed` after the vendor started say: the
    /// delivery rate lowered by any `undelivered` window (its `rate` is the share not
    /// delivered), and silent in a `silent` window.
    pub fn receipts_at(&self, elapsed: std::time::Duration) -> ReceiptPlan {
        let active = || self.schedule.iter().filter(|w| w.is_active_at(elapsed));
        let undelivered = active()
            .filter(|w| w.fault == FaultKind::Undelivered)
            .map(|w| w.rate)
            .fold(0.0_f64, f64::max);
        ReceiptPlan {
            delivery_rate: self.delivery_rate * (1.0 - undelivered),
            silent: self.silent || active().any(|w| w.fault == FaultKind::Silent),
            delay: std::time::Duration::from_millis(self.receipt_delay_ms),
        }
    }
}

/// A fault that applies between two moments of a simulated vendor's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledFault {
    /// Start of the window, in seconds after the vendor started (inclusive).
    pub from_s: u64,
    /// End of the window, in seconds after the vendor started (exclusive).
    pub to_s: u64,
    /// What goes wrong.
    pub fault: FaultKind,
    /// Share of the sends within the window that the fault hits; 1 (all) by default.
    #[serde(default = "always")]
    pub rate: f64,
    /// For `slow`: the time to answer during the window, replacing `latency_ms` (jitter
    /// still applies). Required for `slow`, refused for the other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

fn always() -> f64 {
    1.0
}

/// The kinds of scripted fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Sends fail at once with a transient "outage" error.
    Outage,
    /// Sends are throttled.
    Throttle,
    /// Sends hang (see [`SimulationSettings::timeout_rate`]).
    Timeout,
    /// Sends are rejected for good.
    Reject,
    /// Sends succeed (unless another fault hits) but take `latency_ms`.
    Slow,
    /// Sends succeed, but the window's `rate` of the recipients is not delivered: their
    /// receipts say undelivered.
    Undelivered,
    /// Sends succeed, but nothing is delivered and no receipt comes.
    Silent,
}

impl ScheduledFault {
    /// A window from `from_s` to `to_s` seconds hitting every send with `fault`.
    pub fn new(from_s: u64, to_s: u64, fault: FaultKind) -> Self {
        Self {
            from_s,
            to_s,
            fault,
            rate: 1.0,
            latency_ms: None,
        }
    }

    /// Whether the window covers the moment `elapsed` after the vendor started.
    pub fn is_active_at(&self, elapsed: Duration) -> bool {
        Duration::from_secs(self.from_s) <= elapsed && elapsed < Duration::from_secs(self.to_s)
    }
}

fn check_rate(field: &str, rate: f64) -> Result<(), ConfigError> {
    // Written so that NaN fails too.
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(ConfigError::Simulation {
            field: field.to_owned(),
            problem: format!("expected a share between 0 and 1, found {rate}"),
        })
    }
}

impl SimulationSettings {
    /// A healthy vendor that answers within `latency_ms` plus up to `jitter_ms`.
    pub fn healthy(latency_ms: u64, jitter_ms: u64) -> Self {
        Self {
            latency_ms,
            jitter_ms,
            ..Self::default()
        }
    }

    /// Aliyun-like timing: 60 ms plus up to 40 ms. No faults: add them per scenario.
    pub fn aliyun() -> Self {
        Self::healthy(60, 40)
    }

    /// Tencent-like timing: 80 ms plus up to 60 ms. No faults.
    pub fn tencent() -> Self {
        Self::healthy(80, 60)
    }

    /// Cloopen-like timing: 120 ms plus up to 80 ms. No faults.
    pub fn cloopen() -> Self {
        Self::healthy(120, 80)
    }

    /// Checks that every rate is a share between 0 and 1, that the four exclusive rates
    /// add up to at most 1, and that every window ends after it starts and has the fields
    /// its kind needs, and that a signature, when set, is not empty. The error names the
    /// field (`schedule[2].to_s`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self
            .sign_name
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(ConfigError::Simulation {
                field: "sign_name".into(),
                problem: "expected a signature, found an empty string; leave it out for none"
                    .into(),
            });
        }
        for (field, rate) in [
            ("delivery_rate", self.delivery_rate),
            ("error_rate", self.error_rate),
            ("throttle_rate", self.throttle_rate),
            ("timeout_rate", self.timeout_rate),
            ("reject_rate", self.reject_rate),
        ] {
            check_rate(field, rate)?;
        }
        let total = self.error_rate + self.throttle_rate + self.timeout_rate + self.reject_rate;
        // A little slack for decimal shares like 0.7 + 0.2 + 0.1 that do not add up to
        // exactly 1.0 in binary.
        if total > 1.0 + 1e-9 {
            return Err(ConfigError::Simulation {
                field: "error_rate + throttle_rate + timeout_rate + reject_rate".into(),
                problem: format!(
                    "the rates exclude one another and must add up to at most 1, found {total}"
                ),
            });
        }
        for (index, window) in self.schedule.iter().enumerate() {
            let field = |name: &str| format!("schedule[{index}].{name}");
            if window.from_s >= window.to_s {
                return Err(ConfigError::Simulation {
                    field: field("to_s"),
                    problem: format!(
                        "expected the window to end after it starts (from_s = {}), found to_s = {}",
                        window.from_s, window.to_s
                    ),
                });
            }
            check_rate(&field("rate"), window.rate)?;
            match (window.fault, window.latency_ms) {
                (FaultKind::Slow, None) => {
                    return Err(ConfigError::Simulation {
                        field: field("latency_ms"),
                        problem: "required for fault = \"slow\": how long sends take in the window"
                            .into(),
                    });
                }
                (FaultKind::Slow, Some(_)) | (_, None) => {}
                (kind, Some(_)) => {
                    return Err(ConfigError::Simulation {
                        field: field("latency_ms"),
                        problem: format!(
                            "only applies to fault = \"slow\", found it on {:?}",
                            kind_name(kind)
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

fn kind_name(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Outage => "outage",
        FaultKind::Throttle => "throttle",
        FaultKind::Timeout => "timeout",
        FaultKind::Reject => "reject",
        FaultKind::Slow => "slow",
        FaultKind::Undelivered => "undelivered",
        FaultKind::Silent => "silent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads settings the way a configuration file gives them, then checks them.
    fn parse(text: &str) -> Result<SimulationSettings, String> {
        let settings: SimulationSettings = toml::from_str(text).map_err(|e| e.to_string())?;
        settings.validate().map_err(|e| e.to_string())?;
        Ok(settings)
    }

    fn problem_field(settings: &SimulationSettings) -> String {
        match settings.validate() {
            Err(ConfigError::Simulation { field, .. }) => field,
            other => panic!("expected a simulation error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_a_healthy_instant_vendor() {
        let settings = parse("").unwrap();
        assert_eq!(settings, SimulationSettings::default());
        assert_eq!(settings.latency_ms, 0);
        assert!(!settings.outage);
        assert!(settings.per_number_limits, "on, as at the real vendors");
        assert_eq!((settings.protocol, settings.sign_name), (None, None));
        for preset in [
            SimulationSettings::aliyun(),
            SimulationSettings::tencent(),
            SimulationSettings::cloopen(),
        ] {
            preset.validate().unwrap();
            assert!(preset.latency_ms > 0);
        }
    }

    #[test]
    fn parses_a_scripted_schedule() {
        let settings = parse(
            r#"
            latency_ms = 80
            error_rate = 0.01
            schedule = [
                { from_s = 20, to_s = 60, fault = "outage" },
                { from_s = 90, to_s = 120, fault = "slow", latency_ms = 1500 },
                { from_s = 150, to_s = 160, fault = "throttle", rate = 0.5 },
            ]
            "#,
        )
        .unwrap();
        assert_eq!(settings.latency_ms, 80);
        assert_eq!(
            settings.schedule[0],
            ScheduledFault::new(20, 60, FaultKind::Outage)
        );
        assert_eq!(settings.schedule[1].latency_ms, Some(1500));
        assert_eq!(settings.schedule[2].rate, 0.5);
        let window = &settings.schedule[0];
        assert!(!window.is_active_at(Duration::from_millis(19_999)));
        assert!(window.is_active_at(Duration::from_secs(20)));
        assert!(window.is_active_at(Duration::from_millis(59_999)));
        assert!(!window.is_active_at(Duration::from_secs(60)));
    }

    #[test]
    fn out_of_range_rates_are_refused_by_name() {
        let bad = |f: fn(&mut SimulationSettings)| {
            let mut s = SimulationSettings::default();
            f(&mut s);
            problem_field(&s)
        };
        assert_eq!(bad(|s| s.error_rate = 1.5), "error_rate");
        assert_eq!(bad(|s| s.throttle_rate = -0.1), "throttle_rate");
        assert_eq!(bad(|s| s.timeout_rate = f64::NAN), "timeout_rate");
        assert_eq!(bad(|s| s.reject_rate = 2.0), "reject_rate");
        assert!(
            bad(|s| {
                s.error_rate = 0.6;
                s.throttle_rate = 0.6;
            })
            .contains('+')
        );
        // Shares that add up to 1 in decimal are fine despite binary rounding.
        let s = SimulationSettings {
            error_rate: 0.7,
            throttle_rate: 0.2,
            reject_rate: 0.1,
            ..SimulationSettings::default()
        };
        s.validate().unwrap();
    }

    #[test]
    fn bad_windows_are_refused_by_name() {
        let with = |window: ScheduledFault| SimulationSettings {
            schedule: vec![ScheduledFault::new(0, 1, FaultKind::Outage), window],
            ..SimulationSettings::default()
        };
        assert_eq!(
            problem_field(&with(ScheduledFault::new(60, 20, FaultKind::Outage))),
            "schedule[1].to_s"
        );
        assert_eq!(
            problem_field(&with(ScheduledFault::new(20, 20, FaultKind::Outage))),
            "schedule[1].to_s"
        );
        let mut window = ScheduledFault::new(0, 10, FaultKind::Throttle);
        window.rate = 1.1;
        assert_eq!(problem_field(&with(window)), "schedule[1].rate");
        assert_eq!(
            problem_field(&with(ScheduledFault::new(0, 10, FaultKind::Slow))),
            "schedule[1].latency_ms"
        );
        let mut window = ScheduledFault::new(0, 10, FaultKind::Reject);
        window.latency_ms = Some(5);
        assert_eq!(problem_field(&with(window)), "schedule[1].latency_ms");
    }

    #[test]
    fn the_protocol_signature_and_limits_switch_parse() {
        let settings = parse(
            r#"
            protocol = "tencent"
            sign_name = "腾讯云"
            per_number_limits = false
            "#,
        )
        .unwrap();
        assert_eq!(settings.protocol, Some(Protocol::Tencent));
        assert_eq!(settings.sign_name.as_deref(), Some("腾讯云"));
        assert!(!settings.per_number_limits);
        let e = parse("protocol = \"twilio\"").unwrap_err();
        assert!(e.contains("twilio"), "{e}");
        let e = parse("sign_name = \" \"").unwrap_err();
        assert!(e.starts_with("simulation setting sign_name:"), "{e}");
    }

    #[test]
    fn toml_mistakes_are_reported() {
        let e = parse("eror_rate = 0.1").unwrap_err();
        assert!(e.contains("unknown field `eror_rate`"), "{e}");
        let e = parse("schedule = [{ from_s = 1, to_s = 2, fault = \"meltdown\" }]").unwrap_err();
        assert!(e.to_string().contains("meltdown"), "{e}");
        let e = parse("error_rate = 3.0").unwrap_err();
        assert_eq!(
            e,
            "simulation setting error_rate: expected a share between 0 and 1, found 3"
        );
    }
}
