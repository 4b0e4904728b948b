//! What the sandbox accepts and where it writes: the account each route plays, the
//! templates they approve, the per-number limits switch, the delivery log and the seed.

use std::path::PathBuf;

use serde::Deserialize;
use sms_core::{Templates, VendorId};

use crate::http::Secret;

/// The Aliyun account the sandbox plays: the credentials it accepts, the vendor name it
/// answers for in the templates, and its approved signature.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliyunCredentials {
    /// AccessKey id.
    pub access_key_id: String,
    /// AccessKey secret.
    pub access_key_secret: Secret,
    /// The vendor name whose mappings in [`SandboxConfig::templates`] this route
    /// approves; `aliyun` unless set.
    #[serde(default = "aliyun_name")]
    pub vendor: VendorId,
    /// The account's signature, approved with every template and handed to adapters by
    /// [`aliyun_config`](super::SandboxHandle::aliyun_config); `Sandbox` unless set.
    #[serde(default = "sandbox_sign_name")]
    pub sign_name: String,
}

/// The Tencent Cloud account the sandbox plays: the credentials it accepts, the vendor
/// name it answers for in the templates, and its approved signature.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TencentCredentials {
    /// SecretId.
    pub secret_id: String,
    /// SecretKey.
    pub secret_key: Secret,
    /// The only `SmsSdkAppId` accepted.
    pub sdk_app_id: String,
    /// The vendor name whose mappings in [`SandboxConfig::templates`] this route
    /// approves; `tencent` unless set.
    #[serde(default = "tencent_name")]
    pub vendor: VendorId,
    /// The account's signature, approved with every template and handed to adapters by
    /// [`tencent_config`](super::SandboxHandle::tencent_config); `Sandbox` unless set.
    #[serde(default = "sandbox_sign_name")]
    pub sign_name: String,
}

/// The Cloopen account the sandbox plays: the credentials it accepts and the vendor name
/// it answers for in the templates. Cloopen binds the signature to the template, so the
/// account has none of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloopenCredentials {
    /// ACCOUNT SID.
    pub account_sid: String,
    /// AUTH TOKEN.
    pub auth_token: Secret,
    /// The only `appId` accepted.
    pub app_id: String,
    /// The vendor name whose mappings in [`SandboxConfig::templates`] this route
    /// approves; `cloopen` unless set.
    #[serde(default = "cloopen_name")]
    pub vendor: VendorId,
}

fn vendor_name(name: &str) -> VendorId {
    VendorId::new(name).expect("the vendors' own names are valid vendor ids")
}

fn aliyun_name() -> VendorId {
    vendor_name("aliyun")
}

fn tencent_name() -> VendorId {
    vendor_name("tencent")
}

fn cloopen_name() -> VendorId {
    vendor_name("cloopen")
}

fn sandbox_sign_name() -> String {
    "Sandbox".into()
}

/// What the sandbox accepts and where it writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Aliyun credentials.
    pub aliyun: AliyunCredentials,
    /// Tencent Cloud credentials.
    pub tencent: TencentCredentials,
    /// Cloopen credentials.
    pub cloopen: CloopenCredentials,
    /// The logical templates; each route approves those mapped for its `vendor` name,
    /// with the mapping's signature or the route's `sign_name`. Empty (the default):
    /// every route approves any template, signature and parameters.
    pub templates: Templates,
    /// Whether the routes apply their vendor's default per-number limits (see
    /// [`crate::rules::PerNumberLimits`]). On by default, as at the real vendors; off
    /// for runs that send many messages to a few numbers.
    pub per_number_limits: bool,
    /// JSON-lines file each delivery is appended to; none keeps them in memory only.
    pub delivery_log: Option<PathBuf>,
    /// Seed of the random draws behind error and throttling rates, so a run repeats.
    pub seed: u64,
    /// Where each route pushes delivery receipts, in its vendor's format.
    pub receipts: ReceiptPushes,
}

/// `[receipts]`: the delivery receipts the routes push, as the real vendors push them
/// to the address registered with them, and answer when pulled (Aliyun
/// `QuerySendDetails`, Tencent `PullSmsSendStatus`) whether they push or not.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiptPushes {
    /// Where the Aliyun route pushes its `SmsReport`s; none: it pushes nothing.
    pub aliyun: Option<String>,
    /// Where the Tencent route pushes its status callbacks.
    pub tencent: Option<String>,
    /// Where the Cloopen route pushes its `SMSArrived` reports.
    pub cloopen: Option<String>,
    /// Share of accepted recipients whose receipt says delivered, from 0 to 1; pushed
    /// and pulled receipts tell the same fate.
    pub delivery_rate: f64,
    /// How long after the send the receipts are pushed, and the pulls have them, in
    /// milliseconds.
    pub delay_ms: u64,
}

impl Default for ReceiptPushes {
    fn default() -> Self {
        Self {
            aliyun: None,
            tencent: None,
            cloopen: None,
            delivery_rate: 1.0,
            delay_ms: 200,
        }
    }
}

impl Default for SandboxConfig {
    /// Fixed, obviously fake credentials: the sandbox is for tests and local runs.
    fn default() -> Self {
        Self {
            aliyun: AliyunCredentials {
                access_key_id: "sandbox-aliyun-id".into(),
                access_key_secret: Secret::new("sandbox-aliyun-secret"),
                vendor: aliyun_name(),
                sign_name: sandbox_sign_name(),
            },
            tencent: TencentCredentials {
                secret_id: "AKIDsandbox".into(),
                secret_key: Secret::new("sandbox-tencent-key"),
                sdk_app_id: "1400000000".into(),
                vendor: tencent_name(),
                sign_name: sandbox_sign_name(),
            },
            cloopen: CloopenCredentials {
                account_sid: "sandboxaccountsid".into(),
                auth_token: Secret::new("sandbox-cloopen-token"),
                app_id: "sandboxapp".into(),
                vendor: cloopen_name(),
            },
            templates: Templates::default(),
            per_number_limits: true,
            delivery_log: None,
            seed: 0,
            receipts: ReceiptPushes::default(),
        }
    }
}
