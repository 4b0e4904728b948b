//! Simulated and real SMS vendors, and their fee schedules.
//!
//! - [`fees`]: tiered per-message price lists ([`fees::TieredFeeSchedule`]) and the
//!   built-in lists of Aliyun, Tencent Cloud and Cloopen.
//! - [`simulated`]: in-process vendors ([`simulated::SimulatedVendor`]) speaking like
//!   Aliyun, Tencent Cloud or Cloopen, with seeded, reproducible latency, errors,
//!   throttling, hangs, outages and scripted fault windows.
//! - [`rules`]: what a real vendor checks before it sends (approved templates and
//!   signatures, per-number limits, billing by segment), with each vendor's own codes;
//!   the simulated vendors and the sandbox both apply them.
//! - [`delivery_log`]: what the simulated vendors "delivered", in memory or as JSON lines
//!   on disk, so a test or a simulation run can count duplicates across restarts.
//! - [`http`]: the real vendors' HTTP adapters (Aliyun, Tencent Cloud, Cloopen), their
//!   configuration and their request signers. The Aliyun and Tencent Cloud adapters also
//!   pull delivery receipts ([`sms_core::ReceiptPull`]: `QuerySendDetails`,
//!   `PullSmsSendStatus`), for an account that does not push them.
//! - `sandbox` (feature `sandbox`): a local HTTP server speaking the three vendors'
//!   protocols, with signature checks, a delivery log and fault controls; it pushes
//!   delivery receipts and answers the receipt pulls.

pub mod delivery_log;
pub mod fees;
pub mod http;
/// Delivery receipts the vendors push (Aliyun, Tencent Cloud, Cloopen), read into
/// `DeliveryReport`s, and the answer each vendor expects.
pub mod receipts;
pub mod rules;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod simulated;

/// A configuration that was refused when it was loaded: a fee schedule or simulation
/// settings. The message names the tier or field and says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// One tier of a fee schedule is wrong (`tier` counts from 0, in file order).
    #[error("fee tier {tier}: {problem}")]
    FeeTier {
        /// The tier's position in the list, from 0.
        tier: usize,
        /// What was wrong, and what was expected.
        problem: String,
    },
    /// The fee schedule as a whole is wrong (no tiers at all).
    #[error("fee schedule: {0}")]
    FeeSchedule(String),
    /// A simulation setting is out of range.
    #[error("simulation setting {field}: {problem}")]
    Simulation {
        /// The setting, as written in the configuration (`error_rate`, `schedule[1].to_s`).
        field: String,
        /// What was wrong, and what was expected.
        problem: String,
    },
}
