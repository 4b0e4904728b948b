//! Wiring: from a [`Config`] to the store, the limiters, the vendors and a running
//! [`Gateway`]. `serve` and `simulate` both build their send path here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sms_core::{
    ClientLimiter, DeferredQueue, DeliveryReport, FeeSchedule, RateLimiter, ReceiptPull,
    RecipientLimiter, ReportApplied, UsageLedger, VendorId,
};
use sms_failover::{DrainerHandle, Gateway, GatewayObserver, SharingHandle, VendorEntry};
use sms_limit::{
    InProcessClientLimiter, InProcessLimiter, InProcessRecipientLimiter, RedisClientLimiter,
    RedisLimiter, RedisRecipientLimiter,
};
use sms_providers::delivery_log::DeliveryLog;
use sms_providers::fees;
use sms_providers::http::{AliyunVendor, CloopenVendor, TencentVendor};
use sms_providers::receipts::ReceiptFormat;
use sms_providers::simulated::SimulatedVendor;
use sms_store::postgres::{PgConfig, PgStore};
use sms_store::sqlite::{SqliteConfig, SqliteStore};
use sms_store::{GroupCommit, TracedQueue};

use crate::blocked::BlockedNumbers;
use crate::config::{Config, VendorConfig};
use crate::routes;

/// The queue and the ledger, from one backend.
pub struct Store {
    /// The deferred queue.
    pub queue: Arc<dyn DeferredQueue>,
    /// The usage ledger.
    pub ledger: Arc<dyn UsageLedger>,
    /// Which recipients vendors accepted, and their delivery receipts.
    pub deliveries: Arc<dyn sms_core::DeliveryLog>,
    /// Status events waiting to be posted to the clients.
    pub callbacks: Arc<dyn sms_core::CallbackOutbox>,
    /// Numbers no message may go to, answered from a copy in memory.
    pub blocklist: Arc<BlockedNumbers>,
    /// What each client spent per month.
    pub spend: Arc<dyn sms_core::SpendLedger>,
    /// Which backend, for logs.
    pub kind: &'static str,
}

/// `[postgres]` with the configured URL.
fn pg_config(config: &Config, url: &str) -> PgConfig {
    PgConfig {
        url: url.to_owned(),
        ..config.postgres.clone()
    }
}

/// Opens PostgreSQL when a URL is configured, else the embedded SQLite file; applies
/// migrations. Concurrent keyed sends share their commits (`queue.group_commit_rows`),
/// and each caller's write is a span of its trace.
pub async fn open_store(config: &Config) -> Result<Store> {
    let store = open_backend(config).await?;
    // Postgres pays a round trip and a statement per write, SQLite only a short commit
    // that a wait would leave its one writer idle for.
    let default_wait_us = if store.kind == "postgres" { 1_000 } else { 0 };
    let wait = Duration::from_micros(config.queue.group_commit_wait_us.unwrap_or(default_wait_us));
    let shared = GroupCommit::new(store.queue, config.queue.group_commit_rows, wait);
    Ok(Store {
        queue: Arc::new(TracedQueue::new(Arc::new(shared))),
        ..store
    })
}

/// The configured backend, its queue unwrapped.
async fn open_backend(config: &Config) -> Result<Store> {
    match &config.database_url {
        Some(url) => {
            let store = Arc::new(
                PgStore::connect(pg_config(config, url.expose()))
                    .await
                    .context("connecting to PostgreSQL")?,
            );
            Ok(Store {
                queue: store.clone(),
                ledger: store.clone(),
                deliveries: store.clone(),
                callbacks: store.clone(),
                blocklist: Arc::new(BlockedNumbers::load(store.clone()).await),
                spend: store,
                kind: "postgres",
            })
        }
        None => {
            let store = Arc::new(
                SqliteStore::open_with(SqliteConfig::with_path(config.sqlite_path.clone()))
                    .await
                    .with_context(|| format!("opening {}", config.sqlite_path.display()))?,
            );
            Ok(Store {
                queue: store.clone(),
                ledger: store.clone(),
                deliveries: store.clone(),
                callbacks: store.clone(),
                blocklist: Arc::new(BlockedNumbers::load(store.clone()).await),
                spend: store,
                kind: "sqlite",
            })
        }
    }
}

/// `sms-app migrate`.
pub async fn migrate(config: &Config) -> Result<()> {
    match &config.database_url {
        Some(url) => {
            let pg = PgConfig {
                migrate_on_connect: false,
                ..pg_config(config, url.expose())
            };
            let store = PgStore::connect(pg)
                .await
                .context("connecting to PostgreSQL")?;
            let applied = store.migrate().await.context("applying migrations")?;
            println!(
                "postgres schema {}: applied {:?}, now at version {}",
                store.schema(),
                applied,
                PgStore::schema_version()
            );
        }
        None => {
            open_backend(config).await?;
            println!(
                "sqlite {}: migrations applied",
                config.sqlite_path.display()
            );
        }
    }
    Ok(())
}

/// The limiters of the send path.
struct Limiters {
    global: Arc<dyn RateLimiter>,
    /// None when no windows are configured.
    recipient: Option<Arc<dyn RecipientLimiter>>,
    client: Arc<dyn ClientLimiter>,
}

/// The global limiter, the per-recipient limiter and the clients' limiter, on Redis
/// when a URL is configured, else in this process.
async fn build_limiters(config: &Config) -> Result<Limiters> {
    let limit = &config.limit;
    limit.validate().map_err(|e| anyhow::anyhow!("limit.{e}"))?;
    let windows = !limit.recipient_windows.is_empty();
    match &config.redis_url {
        Some(url) => {
            let client = sms_limit::connect_client(url.expose(), limit)
                .await
                .context("connecting to Redis")?;
            let global = RedisLimiter::from_client(client.clone(), limit)
                .await
                .context("loading the Redis limiter")?;
            let recipient: Option<Arc<dyn RecipientLimiter>> = if windows {
                Some(Arc::new(
                    RedisRecipientLimiter::from_client(client.clone(), limit)
                        .await
                        .context("loading the Redis limiter")?,
                ))
            } else {
                None
            };
            let clients = RedisClientLimiter::from_client(client, limit)
                .await
                .context("loading the Redis limiter")?;
            Ok(Limiters {
                global: Arc::new(global),
                recipient,
                client: Arc::new(clients),
            })
        }
        None => {
            let global =
                InProcessLimiter::from_config(limit).map_err(|e| anyhow::anyhow!("limit.{e}"))?;
            let recipient: Option<Arc<dyn RecipientLimiter>> = if windows {
                Some(Arc::new(
                    InProcessRecipientLimiter::new(limit.recipient_windows.clone())
                        .map_err(|e| anyhow::anyhow!("limit.{e}"))?,
                ))
            } else {
                None
            };
            Ok(Limiters {
                global: Arc::new(global),
                recipient,
                client: Arc::new(InProcessClientLimiter::new()),
            })
        }
    }
}

/// The name of the board vendor health is shared on, under the limiter's key prefix.
const HEALTH_BOARD: &str = "health";

/// Simulated vendors by name, for fault control over HTTP.
pub type SimulatedByName = HashMap<String, Arc<SimulatedVendor>>;

/// Vendors that can be asked for their delivery receipts, by name.
pub type PullersByName = HashMap<String, Arc<dyn ReceiptPull>>;

/// The vendors built from the configuration.
struct BuiltVendors {
    entries: Vec<VendorEntry>,
    simulated: SimulatedByName,
    pullers: PullersByName,
}

/// The vendors in tie-break order, and the simulated ones by name for fault control.
/// Simulated vendors are seeded `seed`, `seed + 1`, … in that order.
fn build_vendors(config: &Config, log: &DeliveryLog, seed: u64) -> Result<BuiltVendors> {
    let named = config.vendors_in_order();
    let mut entries = Vec::new();
    let mut simulated = HashMap::new();
    let mut pullers = PullersByName::new();
    for (index, (name, vendor)) in (0..).zip(named) {
        let vendor_seed = seed.wrapping_add(index);
        let id =
            VendorId::new(name).map_err(|e| anyhow::anyhow!("vendors.{name}: {}", e.problem))?;
        let fees: Arc<dyn FeeSchedule> = match vendor.fees() {
            Some(schedule) => Arc::new(schedule.clone()),
            None => Arc::new(fees::default_for(name).with_context(|| {
                format!("vendors.{name}.fees: no built-in price list for {name:?}; give one")
            })?),
        };
        let settings_error = |e| anyhow::anyhow!("vendors.{name}.settings: {e}");
        let vendor: Arc<dyn sms_core::Vendor> = match vendor {
            VendorConfig::Simulated(v) => {
                let vendor = Arc::new(
                    SimulatedVendor::new(id, v.simulation.clone(), vendor_seed, log.clone())
                        .map_err(|e| anyhow::anyhow!("vendors.{name}.simulation: {e}"))?
                        .with_templates(config.templates.clone()),
                );
                simulated.insert(name.clone(), vendor.clone());
                vendor
            }
            VendorConfig::Aliyun(v) => {
                let vendor = Arc::new(
                    v.settings
                        .clone()
                        .with_env()
                        .and_then(|settings| AliyunVendor::with_id(id, settings))
                        .map_err(settings_error)?,
                );
                pullers.insert(name.clone(), vendor.clone());
                vendor
            }
            VendorConfig::Tencent(v) => {
                let vendor = Arc::new(
                    v.settings
                        .clone()
                        .with_env()
                        .and_then(|settings| TencentVendor::with_id(id, settings))
                        .map_err(settings_error)?,
                );
                pullers.insert(name.clone(), vendor.clone());
                vendor
            }
            VendorConfig::Cloopen(v) => Arc::new(
                v.settings
                    .clone()
                    .with_env()
                    .and_then(|settings| CloopenVendor::with_id(id, settings))
                    .map_err(settings_error)?,
            ),
        };
        entries.push(VendorEntry { vendor, fees });
    }
    if entries.is_empty() {
        anyhow::bail!("vendors: expected at least one vendor");
    }
    Ok(BuiltVendors {
        entries,
        simulated,
        pullers,
    })
}

/// What the caller adds to a configuration to build the send path.
pub struct Extras {
    /// Where simulated vendors record what they delivered.
    pub delivery_log: DeliveryLog,
    /// Sees every attempt, switch and queueing.
    pub observer: Arc<dyn GatewayObserver>,
    /// Seed of the first simulated vendor (in tie-break order); the next take the
    /// following numbers.
    pub seed: u64,
    /// Holds drained messages back while their client's spend cap is reached.
    pub spend_gate: Option<Arc<dyn sms_core::SpendGate>>,
}

/// The send path, initialised, its drainer running.
pub struct SendPath {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// Its drainer; shut it down before the process ends.
    pub drainer: DrainerHandle,
    /// The task that keeps its vendor health in step with the deployment's (with Redis);
    /// shut it down before the process ends.
    pub sharing: Option<SharingHandle>,
    /// The queue and ledger it writes to.
    pub store: Store,
    /// The simulated vendors by name, for fault control.
    pub simulated: SimulatedByName,
    /// Each vendor's fee schedule, in tie-break order.
    pub fees: Vec<Arc<dyn FeeSchedule>>,
    /// The format of each vendor's delivery receipts, by vendor name.
    pub receipt_formats: HashMap<String, ReceiptFormat>,
    /// The real vendors that can be asked for their receipts, by name.
    pub pullers: PullersByName,
    /// The named clients' own limits.
    pub client_limiter: Arc<dyn ClientLimiter>,
}

/// The receipt format vendor `name` pushes: its kind's, or for a simulated vendor the
/// protocol it speaks.
fn receipt_format(
    name: &str,
    vendor: &VendorConfig,
    simulated: &SimulatedByName,
) -> Option<ReceiptFormat> {
    Some(match vendor {
        VendorConfig::Aliyun(_) => ReceiptFormat::Aliyun,
        VendorConfig::Tencent(_) => ReceiptFormat::Tencent,
        VendorConfig::Cloopen(_) => ReceiptFormat::Cloopen,
        VendorConfig::Simulated(_) => simulated.get(name)?.protocol().into(),
    })
}

/// Builds the store, the limiters, the vendors and the gateway from `config`, reads the
/// billed volumes and starts the drainer.
pub async fn build_send_path(config: &Config, extras: Extras) -> Result<SendPath> {
    let store = open_store(config).await?;
    let Limiters {
        global: limiter,
        recipient: recipient_limiter,
        client: client_limiter,
    } = build_limiters(config).await?;
    let BuiltVendors {
        entries: vendors,
        simulated,
        pullers,
    } = build_vendors(config, &extras.delivery_log, extras.seed)?;
    let fees = vendors.iter().map(|entry| entry.fees.clone()).collect();
    let receipt_formats = config
        .vendors
        .iter()
        .filter_map(|(name, vendor)| {
            receipt_format(name, vendor, &simulated).map(|format| (name.clone(), format))
        })
        .collect();
    let ids: Vec<VendorId> = vendors.iter().map(|entry| entry.vendor.id()).collect();
    for line in routes::report(&config.templates, &ids) {
        if line.is_warning() {
            tracing::warn!("{line}");
        } else {
            tracing::info!("{line}");
        }
    }
    let mut builder = Gateway::builder(vendors, limiter, store.queue.clone(), store.ledger.clone())
        .config(config.failover.clone())
        .templates(config.templates.clone())
        .observer(extras.observer)
        .deliveries(store.deliveries.clone())
        .blocklist(store.blocklist.clone());
    if let Some(gate) = extras.spend_gate {
        builder = builder.spend_gate(gate);
    }
    if let Some(recipient_limiter) = recipient_limiter {
        builder = builder.recipient_limiter(recipient_limiter);
    }
    if config.callbacks.enabled() {
        builder = builder.callbacks(store.callbacks.clone(), config.callbacks.default_url()?);
    }
    if let Some(url) = &config.redis_url {
        // Instances sharing Redis share vendor health too: one switch for all.
        let board = sms_limit::RedisBoard::connect(url.expose(), &config.limit, HEALTH_BOARD)
            .await
            .context("connecting the shared vendor health to Redis")?;
        builder = builder.board(Arc::new(board));
    }
    let gateway = Arc::new(builder.build().map_err(|e| anyhow::anyhow!("{e}"))?);
    gateway.init().await.context("reading billed volumes")?;
    let drainer = gateway.start_drainer();
    let sharing = gateway.start_sharing();
    tracing::info!(
        store = store.kind,
        limiter = if config.redis_url.is_some() { "redis" } else { "in-process" },
        current = %gateway.current_vendor(),
        "gateway ready"
    );
    Ok(SendPath {
        gateway,
        drainer,
        sharing,
        store,
        simulated,
        fees,
        receipt_formats,
        pullers,
        client_limiter,
    })
}

/// Sees each batch of delivery receipts and what applying it did.
pub type ReceiptCounter = Arc<dyn Fn(&[DeliveryReport], &[ReportApplied]) + Send + Sync>;

/// Receipts a simulated vendor pushes wait here at most before their writer.
const SIMULATED_RECEIPTS_QUEUED: usize = 65_536;

/// Makes the simulated vendors named in `vendors` push their delivery receipts as a real
/// vendor's reach the receipt endpoint: into the delivery log (a batch per write),
/// then to the gateway's receipt-aware failover, and to `count`. Receipts beyond what
/// the writer keeps up with are dropped with a warning, as a vendor whose pushes fail.
pub fn take_simulated_receipts(send_path: &SendPath, vendors: &[&str], count: ReceiptCounter) {
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Vec<DeliveryReport>>(SIMULATED_RECEIPTS_QUEUED / 64);
    let deliveries = send_path.store.deliveries.clone();
    let gateway = send_path.gateway.clone();
    tokio::spawn(async move {
        let mut batches = Vec::new();
        while rx.recv_many(&mut batches, 64).await > 0 {
            let reports: Vec<DeliveryReport> = batches.drain(..).flatten().collect();
            match deliveries.apply_reports(&reports, chrono::Utc::now()).await {
                Ok(applied) => {
                    count(&reports, &applied);
                    gateway.receipts_applied(&reports, &applied).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, receipts = reports.len(), "could not store simulated receipts");
                }
            }
        }
    });
    for name in vendors {
        let Some(vendor) = send_path.simulated.get(*name) else {
            continue;
        };
        let tx = tx.clone();
        vendor.set_receipt_sink(Arc::new(move |reports| {
            if tx.try_send(reports).is_err() {
                tracing::warn!("simulated receipts dropped: their writer is behind");
            }
        }));
    }
}

/// Why an operator's retry of a message was refused.
#[derive(Debug)]
pub enum RetryRefused {
    /// The message's deliver-by time has passed: queued again, it would expire at once.
    PastDeadline {
        /// The message.
        id: sms_core::MessageId,
        /// Its deliver-by time.
        at: chrono::DateTime<chrono::Utc>,
    },
    /// The store refused or failed.
    Store(sms_core::StoreError),
}

impl std::fmt::Display for RetryRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PastDeadline { id, at } => write!(
                f,
                "message {id} expired at {at}: its deliver-by time has passed, so a retry \
                 would expire it again at once; send it again with a new expires_in_s or \
                 expires_at"
            ),
            Self::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RetryRefused {}

impl From<sms_core::StoreError> for RetryRefused {
    fn from(e: sms_core::StoreError) -> Self {
        Self::Store(e)
    }
}

/// Re-queues a dead or expired message for a fresh set of attempts (operator action),
/// unless its deliver-by time has passed.
pub async fn retry_message(
    queue: &dyn DeferredQueue,
    id: sms_core::MessageId,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<sms_core::StoredMessage, RetryRefused> {
    if let Some(m) = queue.get(id).await? {
        if let Some(at) = m
            .request
            .expires_at()
            .filter(|_| m.request.is_expired_at(now))
        {
            return Err(RetryRefused::PastDeadline { id, at });
        }
    }
    Ok(queue.retry(id, now).await?)
}
