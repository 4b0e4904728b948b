//! The gateway's configuration: a TOML file, every key defaulted, plus environment overrides.
//!
//! Each section is the configuration type of the crate it tunes, embedded as is:
//! `[failover]` and `[queue]` are [`FailoverConfig`], `[limit]` is [`LimitConfig`],
//! `[postgres]` is [`PgConfig`], and each `[vendors.<name>]` is a [`VendorConfig`] whose
//! `kind` picks the adapter and its typed settings; `[templates.<name>]` is a
//! [`Templates`] entry mapping a logical template to each vendor's. Two things about
//! the file are this
//! crate's own (see [`layout`]): the gateway's retry and drain keys sit in `[queue]`
//! beside `retention_h`, and a vendor without `kind` is simulated.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sms_core::Templates;
use sms_failover::{FailoverConfig, FailoverError};
use sms_limit::LimitConfig;
use sms_providers::fees::{TieredFeeSchedule, optional_tier_list};
use sms_providers::http::{AliyunConfig, CloopenConfig, TencentConfig};
use sms_providers::simulated::SimulationSettings;
use sms_store::postgres::PgConfig;

use crate::telemetry::{ENV_OTLP_ENDPOINT, TelemetryConfig};

pub mod callbacks;
pub mod clients;

pub use self::callbacks::{CallbacksConfig, ENV_CALLBACK_SECRET};
pub use self::clients::{ClientConfig, SpendConfig};

/// Environment variables that override the file.
pub const ENV_DATABASE_URL: &str = "SMS_DATABASE_URL";
/// Redis URL; absent means in-process limiters.
pub const ENV_REDIS_URL: &str = "SMS_REDIS_URL";
/// Listen address.
pub const ENV_LISTEN: &str = "SMS_LISTEN";
/// Comma-separated bearer tokens.
pub const ENV_API_TOKENS: &str = "SMS_API_TOKENS";
/// Comma-separated read-only bearer tokens (the status page's, for operators).
pub const ENV_OPERATOR_TOKENS: &str = "SMS_OPERATOR_TOKENS";

/// Shortest bearer token accepted.
const MIN_TOKEN_CHARS: usize = 16;
/// Shortest retention of sent messages, in hours.
const MIN_RETENTION_H: u64 = 1;
/// Most sends asked about in one pull from a vendor.
const MAX_PULL_BATCH: u32 = 1000;
/// Most rows one shared commit may hold.
const MAX_GROUP_COMMIT_ROWS: usize = 4096;
/// Longest wait of a shared commit for more sends, in microseconds.
const MAX_GROUP_COMMIT_WAIT_US: u64 = 100_000;

/// A value that is never printed: `Debug`, `Display` and serialisation show `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where `serve` listens (`SMS_LISTEN`).
    pub listen: String,
    /// PostgreSQL URL (`SMS_DATABASE_URL`); absent means embedded SQLite.
    pub database_url: Option<Secret>,
    /// SQLite file when no database URL is set.
    pub sqlite_path: PathBuf,
    /// Redis URL (`SMS_REDIS_URL`); absent means in-process limiters.
    pub redis_url: Option<Secret>,
    /// Bearer tokens accepted by the API (`SMS_API_TOKENS`, comma-separated).
    pub api_tokens: Vec<Secret>,
    /// Read-only bearer tokens (`SMS_OPERATOR_TOKENS`, comma-separated): `GET` routes
    /// only, such as the status page's data; anything else is refused with 403.
    pub operator_tokens: Vec<Secret>,
    /// `[clients.<name>]`: named callers, each with its tokens (as SHA-256 digests, or
    /// from `SMS_CLIENT_<NAME>_TOKENS`) and the templates it may send.
    pub clients: BTreeMap<String, ClientConfig>,
    /// `[spend]`: the deployment's monthly spend cap and when caps warn.
    pub spend: SpendConfig,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Where simulated vendors append their deliveries (JSON lines); absent keeps them in memory.
    pub simulation_log: Option<PathBuf>,
    /// `[failover]`, and the retry and drain keys of `[queue]`.
    pub failover: FailoverConfig,
    /// The rest of `[queue]`.
    pub queue: QueueStorage,
    /// `[limit]`: the global and per-recipient limiters.
    pub limit: LimitConfig,
    /// `[postgres]`: the pool and schema; the URL is `database_url`.
    pub postgres: PgConfig,
    /// Vendors by name, tried cheapest first; ties go to the earlier `order`.
    pub vendors: BTreeMap<String, VendorConfig>,
    /// Logical templates and each vendor's template for them; none means the caller's
    /// template name goes to every vendor unchanged.
    #[serde(skip_serializing_if = "Templates::is_pass_through")]
    pub templates: Templates,
    /// `[telemetry]`: the optional export of traces.
    pub telemetry: TelemetryConfig,
    /// `[receipts]`: the vendors' delivery receipts.
    pub receipts: ReceiptsConfig,
    /// `[callbacks]`: status events posted to the clients.
    pub callbacks: CallbacksConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            database_url: None,
            sqlite_path: PathBuf::from("./data/sms-gateway.db"),
            redis_url: None,
            api_tokens: Vec::new(),
            operator_tokens: Vec::new(),
            clients: BTreeMap::new(),
            max_body_bytes: 256 * 1024,
            spend: SpendConfig::default(),
            simulation_log: None,
            failover: FailoverConfig::default(),
            queue: QueueStorage::default(),
            limit: LimitConfig::default(),
            postgres: PgConfig::default(),
            vendors: default_vendors(),
            templates: Templates::default(),
            telemetry: TelemetryConfig::default(),
            receipts: ReceiptsConfig::default(),
            callbacks: CallbacksConfig::default(),
        }
    }
}

/// `[receipts]`: where the vendors push delivery receipts, and how long the gateway
/// waits for one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiptsConfig {
    /// The secret in each vendor's receipt URL, `POST /v1/receipts/{vendor}/{secret}`,
    /// by vendor name (`SMS_RECEIPT_SECRET_<VENDOR>`, the name in capitals). A vendor
    /// without one has no receipt endpoint.
    pub secrets: BTreeMap<String, Secret>,
    /// A recipient whose receipt has not come this long after the send is `unknown`.
    pub unknown_after_s: u64,
    /// How often a real vendor without a receipt secret (no push) is asked for its
    /// receipts, in seconds; 0 never asks.
    pub pull_interval_s: u64,
    /// Most sends a vendor asked per send (Aliyun) is asked about in one pull.
    pub pull_batch: u32,
}

impl Default for ReceiptsConfig {
    fn default() -> Self {
        Self {
            secrets: BTreeMap::new(),
            // Vendors keep pushing receipts for up to three days.
            unknown_after_s: 72 * 3600,
            pull_interval_s: 30,
            pull_batch: 100,
        }
    }
}

/// The environment variable holding vendor `name`'s receipt secret.
pub fn receipt_secret_env(name: &str) -> String {
    format!(
        "SMS_RECEIPT_SECRET_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// What `[queue]` holds besides the gateway's retry and drain settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueStorage {
    /// How long sent messages are kept for status look-ups, in hours.
    pub retention_h: u64,
    /// Most keyed live sends stored (or marked sent) in one shared commit; 1 gives each
    /// its own commit.
    pub group_commit_rows: usize,
    /// How long a shared commit waits after its first send for others, in microseconds.
    /// Absent: 1000 on Postgres, 0 on SQLite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_commit_wait_us: Option<u64>,
}

impl Default for QueueStorage {
    fn default() -> Self {
        Self {
            retention_h: 72,
            group_commit_rows: sms_store::DEFAULT_MAX_ROWS,
            group_commit_wait_us: None,
        }
    }
}

/// `[vendors.<name>]`: one vendor, its adapter chosen by `kind`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VendorConfig {
    /// An in-process vendor with seeded latency and faults (`simulation = { … }`).
    Simulated(SimulatedVendorConfig),
    /// Aliyun `SendSms` (`settings = { … }`, see `AliyunConfig`).
    Aliyun(HttpVendorConfig<AliyunConfig>),
    /// Tencent Cloud `SendSms` (`settings = { … }`, see `TencentConfig`).
    Tencent(HttpVendorConfig<TencentConfig>),
    /// Cloopen template SMS (`settings = { … }`, see `CloopenConfig`).
    Cloopen(HttpVendorConfig<CloopenConfig>),
}

/// A simulated vendor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedVendorConfig {
    /// Tie-break order among equally priced vendors (lower first).
    #[serde(default)]
    pub order: u32,
    /// Price tiers; absent means the built-in list for the vendor's name.
    #[serde(
        default,
        with = "optional_tier_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub fees: Option<TieredFeeSchedule>,
    /// Latency, error rates and scheduled faults; absent means a quiet vendor answering
    /// in 20 to 30 ms.
    #[serde(default = "quiet_vendor")]
    pub simulation: SimulationSettings,
}

/// A real vendor reached over HTTP, with its adapter's settings `S`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpVendorConfig<S> {
    /// Tie-break order among equally priced vendors (lower first).
    #[serde(default)]
    pub order: u32,
    /// Price tiers; absent means the built-in list for the vendor's name.
    #[serde(
        default,
        with = "optional_tier_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub fees: Option<TieredFeeSchedule>,
    /// Endpoint, credentials, sign name; credentials left out come from the environment
    /// (`SMS_ALIYUN_*`, `SMS_TENCENT_*`, `SMS_CLOOPEN_*`).
    #[serde(default)]
    pub settings: S,
}

fn quiet_vendor() -> SimulationSettings {
    SimulationSettings::healthy(20, 10)
}

impl VendorConfig {
    /// A quiet simulated vendor at `order`.
    pub fn simulated(order: u32) -> Self {
        Self::Simulated(SimulatedVendorConfig {
            order,
            fees: None,
            simulation: quiet_vendor(),
        })
    }

    /// Tie-break order among equally priced vendors (lower first).
    pub fn order(&self) -> u32 {
        match self {
            Self::Simulated(v) => v.order,
            Self::Aliyun(v) => v.order,
            Self::Tencent(v) => v.order,
            Self::Cloopen(v) => v.order,
        }
    }

    /// The configured price tiers, if any.
    pub fn fees(&self) -> Option<&TieredFeeSchedule> {
        match self {
            Self::Simulated(v) => v.fees.as_ref(),
            Self::Aliyun(v) => v.fees.as_ref(),
            Self::Tencent(v) => v.fees.as_ref(),
            Self::Cloopen(v) => v.fees.as_ref(),
        }
    }
}

fn default_vendors() -> BTreeMap<String, VendorConfig> {
    ["aliyun", "tencent", "cloopen"]
        .into_iter()
        .zip(0..)
        .map(|(name, order)| (name.to_owned(), VendorConfig::simulated(order)))
        .collect()
}

impl Config {
    /// Reads `path` (or the defaults when `None`), then applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Self::from_toml(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok());
        config.validate()?;
        Ok(config)
    }

    /// The vendors in tie-break order: by `order`, then by name.
    pub fn vendors_in_order(&self) -> Vec<(&String, &VendorConfig)> {
        let mut named: Vec<(&String, &VendorConfig)> = self.vendors.iter().collect();
        named.sort_by_key(|(name, vendor)| (vendor.order(), name.as_str()));
        named
    }

    /// Parses a TOML document; an unknown or mistyped key is an error naming it and its line.
    pub fn from_toml(text: &str) -> Result<Self> {
        let trimmed = |e: toml::de::Error| anyhow::anyhow!("{}", e.to_string().trim_end());
        let mut document = toml::de::DeTable::parse(text).map_err(trimmed)?;
        layout::read(document.get_mut(), text)?;
        Config::deserialize(toml::de::Deserializer::from(document)).map_err(|mut e| {
            e.set_input(Some(text));
            trimmed(e)
        })
    }

    /// Applies the `SMS_*` overrides read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(url) = var(ENV_DATABASE_URL).filter(|v| !v.is_empty()) {
            self.database_url = Some(Secret::new(url));
        }
        if let Some(url) = var(ENV_REDIS_URL).filter(|v| !v.is_empty()) {
            self.redis_url = Some(Secret::new(url));
        }
        if let Some(listen) = var(ENV_LISTEN).filter(|v| !v.is_empty()) {
            self.listen = listen;
        }
        if let Some(tokens) = var(ENV_API_TOKENS) {
            self.api_tokens = token_list(&tokens);
        }
        if let Some(tokens) = var(ENV_OPERATOR_TOKENS) {
            self.operator_tokens = token_list(&tokens);
        }
        for (name, client) in &mut self.clients {
            if let Some(tokens) = var(&clients::tokens_env(name)) {
                client.tokens = token_list(&tokens);
            }
        }
        let names: Vec<String> = self.vendors.keys().cloned().collect();
        for name in names {
            if let Some(secret) = var(&receipt_secret_env(&name)).filter(|v| !v.is_empty()) {
                self.receipts.secrets.insert(name, Secret::new(secret));
            }
        }
        if let Some(secret) = var(ENV_CALLBACK_SECRET).filter(|v| !v.is_empty()) {
            self.callbacks.secret = Some(Secret::new(secret));
        }
        if let Some(endpoint) = var(ENV_OTLP_ENDPOINT).filter(|v| !v.is_empty()) {
            self.telemetry.otlp_endpoint = Some(endpoint);
        }
    }

    /// Checks values serde cannot, with each library's own checks; each error names its key.
    pub fn validate(&self) -> Result<()> {
        let lists = [
            ("api_tokens", ENV_API_TOKENS, &self.api_tokens),
            (
                "operator_tokens",
                ENV_OPERATOR_TOKENS,
                &self.operator_tokens,
            ),
        ];
        for (key, env, tokens) in lists {
            for (i, token) in tokens.iter().enumerate() {
                check_token_length(&format!("{key}[{i}] ({env})"), token)?;
            }
        }
        if let Some(i) = self
            .operator_tokens
            .iter()
            .position(|t| self.api_tokens.iter().any(|a| a.expose() == t.expose()))
        {
            bail!(
                "operator_tokens[{i}] ({ENV_OPERATOR_TOKENS}): the same token is in api_tokens, \
                 which would make the read-only token a full one; give operators a token of \
                 their own"
            );
        }
        if !(1..=MAX_GROUP_COMMIT_ROWS).contains(&self.queue.group_commit_rows) {
            bail!(
                "queue.group_commit_rows: expected 1 to {MAX_GROUP_COMMIT_ROWS}, found {}",
                self.queue.group_commit_rows
            );
        }
        if let Some(wait) = self
            .queue
            .group_commit_wait_us
            .filter(|w| *w > MAX_GROUP_COMMIT_WAIT_US)
        {
            bail!(
                "queue.group_commit_wait_us: expected at most {MAX_GROUP_COMMIT_WAIT_US}, found {wait}; \
                 every keyed send may wait this long for its commit"
            );
        }
        if self.queue.retention_h < MIN_RETENTION_H {
            bail!(
                "queue.retention_h: expected at least {MIN_RETENTION_H}, found {}; sent \
                 messages are what answers a client retrying with the same idempotency key, \
                 and clients retry for up to an hour",
                self.queue.retention_h
            );
        }
        self.failover.validate().map_err(|e| match e {
            FailoverError::InvalidConfig { field, problem } => {
                anyhow::anyhow!("{}.{field}: {problem}", layout::section_of(field))
            }
            other => anyhow::anyhow!("failover: {other}"),
        })?;
        self.limit
            .validate()
            .map_err(|e| anyhow::anyhow!("limit.{e}"))?;
        self.postgres.validate().map_err(|e| match e {
            sms_store::Error::InvalidConfig { field, problem } => {
                anyhow::anyhow!("postgres.{field}: {problem}")
            }
            other => anyhow::anyhow!("postgres: {other}"),
        })?;
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            bail!(
                "listen: expected an address like 127.0.0.1:8080, found {:?}",
                self.listen
            );
        }
        if self.vendors.is_empty() {
            bail!("vendors: expected at least one vendor");
        }
        let mut ids = Vec::with_capacity(self.vendors.len());
        for (name, vendor) in &self.vendors {
            ids.push(
                sms_core::VendorId::new(name)
                    .map_err(|e| anyhow::anyhow!("vendors.{name}: {}", e.problem))?,
            );
            if let VendorConfig::Simulated(simulated) = vendor {
                simulated
                    .simulation
                    .validate()
                    .map_err(|e| anyhow::anyhow!("vendors.{name}.simulation: {e}"))?;
            }
        }
        self.templates
            .check_vendors(&ids)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        clients::validate(
            &self.clients,
            &self.spend,
            &self.api_tokens,
            &self.operator_tokens,
            &self.templates,
        )?;
        for (name, secret) in &self.receipts.secrets {
            let env = receipt_secret_env(name);
            if !self.vendors.contains_key(name) {
                bail!("receipts.secrets.{name} ({env}): no vendor is named {name:?}");
            }
            let length = secret.expose().chars().count();
            let url_safe = secret
                .expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if length < MIN_TOKEN_CHARS || !url_safe {
                bail!(
                    "receipts.secrets.{name} ({env}): expected at least {MIN_TOKEN_CHARS} \
                     letters, digits, '-' or '_' (it is part of a URL), found {length} \
                     characters{}",
                    if url_safe {
                        ""
                    } else {
                        " with others among them"
                    }
                );
            }
        }
        if self.receipts.unknown_after_s == 0 {
            bail!("receipts.unknown_after_s: expected at least 1 second, found 0");
        }
        if !(1..=MAX_PULL_BATCH).contains(&self.receipts.pull_batch) {
            bail!(
                "receipts.pull_batch: expected 1 to {MAX_PULL_BATCH}, found {}",
                self.receipts.pull_batch
            );
        }
        self.callbacks.validate()?;
        self.telemetry.validate()
    }

    /// The effective configuration as TOML, in the file's layout, secrets shown as `***`.
    pub fn to_redacted_toml(&self) -> Result<String> {
        let mut document = toml::Table::try_from(self)?;
        layout::write(&mut document);
        Ok(toml::to_string_pretty(&document)?)
    }
}

/// Tokens from a comma-separated environment variable, blanks dropped.
/// Fails, naming `key`, when `token` is shorter than [`MIN_TOKEN_CHARS`].
fn check_token_length(key: &str, token: &Secret) -> Result<()> {
    let length = token.expose().trim().chars().count();
    if length < MIN_TOKEN_CHARS {
        bail!(
            "{key}: expected at least {MIN_TOKEN_CHARS} characters, found {length}; a short \
             token can be guessed, and an empty one would let no request in while looking \
             configured"
        );
    }
    Ok(())
}

fn token_list(text: &str) -> Vec<Secret> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(Secret::new)
        .collect()
}

/// Where the file puts keys that its sections' types keep elsewhere.
///
/// `FailoverConfig` is one type for the send path, but operators think of retries and
/// the drain as the queue's business, so the file keeps those keys in `[queue]`, beside
/// `retention_h`. The Postgres URL is `database_url` (or `SMS_DATABASE_URL`), whose
/// presence is what selects Postgres, so `[postgres]` takes no `url`. And a vendor
/// without `kind` is simulated, as the defaults are.
mod layout {
    use std::borrow::Cow;

    use anyhow::{Result, bail};
    use toml::Spanned;
    use toml::de::{DeTable, DeValue};

    /// `FailoverConfig` keys written in `[queue]`.
    pub(super) const QUEUE_KEYS: [&str; 11] = [
        "max_attempts",
        "retry_horizon_h",
        "backoff_base_ms",
        "backoff_max_s",
        "lease_s",
        "drain_batch",
        "drain_concurrency",
        "drain_concurrency_max",
        "drain_max_batches",
        "drain_interval_ms",
        "normal_min_share",
    ];

    /// `QueueStorage` keys, the rest of `[queue]`.
    const STORAGE_KEYS: [&str; 3] = ["retention_h", "group_commit_rows", "group_commit_wait_us"];

    /// The file's section holding `FailoverConfig`'s key `field`.
    pub(super) fn section_of(field: &str) -> &'static str {
        if is_queue_key(field) {
            "queue"
        } else {
            "failover"
        }
    }

    fn is_queue_key(key: &str) -> bool {
        QUEUE_KEYS.contains(&key)
    }

    /// Turns the file's layout into the sections' types' (before deserialising): the
    /// gateway's keys of `[queue]` join `[failover]`, keeping their positions in `text`
    /// for error messages, and vendors without `kind` get `kind = "simulated"`.
    pub(super) fn read(document: &mut DeTable<'_>, text: &str) -> Result<()> {
        let line = |span: std::ops::Range<usize>| text[..span.start].matches('\n').count() + 1;
        let mut moved = Vec::new();
        if let Some(DeValue::Table(queue)) = document.get_mut("queue").map(Spanned::get_mut) {
            let keys: Vec<_> = queue.keys().cloned().collect();
            for key in keys {
                if is_queue_key(key.get_ref()) {
                    if let Some(value) = queue.remove(key.get_ref().as_ref() as &str) {
                        moved.push((key, value));
                    }
                } else if !STORAGE_KEYS.contains(&key.get_ref().as_ref()) {
                    bail!(
                        "line {}: queue.{}: unknown key, expected one of {}, {}",
                        line(key.span()),
                        key.get_ref(),
                        STORAGE_KEYS.join(", "),
                        QUEUE_KEYS.join(", ")
                    );
                }
            }
        }
        if let Some(DeValue::Table(failover)) = document.get_mut("failover").map(Spanned::get_mut) {
            if let Some(key) = failover.keys().find(|k| is_queue_key(k.get_ref())) {
                bail!(
                    "line {}: failover.{}: this key belongs in [queue]",
                    line(key.span()),
                    key.get_ref()
                );
            }
        }
        if !moved.is_empty() {
            let failover = document
                .entry(Spanned::new(0..0, Cow::Borrowed("failover")))
                .or_insert_with(|| Spanned::new(0..0, DeValue::Table(DeTable::new())));
            if let DeValue::Table(failover) = failover.get_mut() {
                failover.extend(moved);
            }
        }
        if let Some(DeValue::Table(postgres)) = document.get_mut("postgres").map(Spanned::get_mut) {
            if let Some(key) = postgres.keys().find(|k| k.get_ref() == "url") {
                bail!(
                    "line {}: postgres.url: give the URL as database_url or in SMS_DATABASE_URL",
                    line(key.span())
                );
            }
        }
        if let Some(DeValue::Table(vendors)) = document.get_mut("vendors").map(Spanned::get_mut) {
            for (_, vendor) in vendors.iter_mut() {
                let span = vendor.span();
                if let DeValue::Table(vendor) = vendor.get_mut() {
                    if !vendor.contains_key("kind") {
                        vendor.insert(
                            Spanned::new(span.clone(), Cow::Borrowed("kind")),
                            Spanned::new(span, DeValue::String(Cow::Borrowed("simulated"))),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Turns the sections' types' layout into the file's (after serialising).
    pub(super) fn write(document: &mut toml::Table) {
        let mut moved = toml::Table::new();
        if let Some(toml::Value::Table(failover)) = document.get_mut("failover") {
            for key in QUEUE_KEYS {
                if let Some(value) = failover.remove(key) {
                    moved.insert(key.to_owned(), value);
                }
            }
        }
        if let Some(toml::Value::Table(queue)) = document.get_mut("queue") {
            queue.extend(moved);
        }
        if let Some(toml::Value::Table(postgres)) = document.get_mut("postgres") {
            postgres.remove("url");
        }
    }
}

#[cfg(test)]
mod tests;
