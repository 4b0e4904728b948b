//! Wiring: from the configuration to backends, vendors, the gateway and the HTTP server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sms_core::{
    DeferredQueue, FeeSchedule, RateLimiter, RecipientLimiter, SystemClock, UsageLedger, VendorId,
};
use sms_failover::{DrainerHandle, FailoverConfig, Gateway, TimeoutPolicy, VendorEntry};
use sms_limit::{
    InProcessLimiter, InProcessRecipientLimiter, LimitConfig, RecipientWindow, RedisErrorPolicy,
    RedisLimiter, RedisRecipientLimiter,
};
use sms_providers::delivery_log::DeliveryLog;
use sms_providers::fees::{self, TieredFeeSchedule};
use sms_providers::simulated::{SimulatedVendor, SimulationSettings};
use sms_store::postgres::{PgConfig, PgStore};
use sms_store::sqlite::{SqliteConfig, SqliteStore};

use crate::config::{Config, OnRedisError, OnTimeout};
use crate::http::{AppState, router};
use crate::metrics::Metrics;

/// The queue and the ledger, from one backend.
pub struct Store {
    /// The deferred queue.
    pub queue: Arc<dyn DeferredQueue>,
    /// The usage ledger.
    pub ledger: Arc<dyn UsageLedger>,
    /// Which backend, for logs.
    pub kind: &'static str,
}

fn pg_config(config: &Config, url: &str) -> PgConfig {
    PgConfig {
        pool_size: config.postgres.pool_size,
        ..PgConfig::with_url(url).schema(config.postgres.schema.clone())
    }
}

/// Opens PostgreSQL when a URL is configured, else the embedded SQLite file; applies migrations.
pub async fn open_store(config: &Config) -> Result<Store> {
    match &config.database_url {
        Some(url) => {
            let store = Arc::new(
                PgStore::connect(pg_config(config, url.expose()))
                    .await
                    .context("connecting to PostgreSQL")?,
            );
            Ok(Store {
                queue: store.clone(),
                ledger: store,
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
                ledger: store,
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
            open_store(config).await?;
            println!(
                "sqlite {}: migrations applied",
                config.sqlite_path.display()
            );
        }
    }
    Ok(())
}

fn limit_config(config: &Config) -> LimitConfig {
    LimitConfig {
        global_per_second: config.limit.global_per_second,
        recipient_windows: config
            .limit
            .recipient_windows
            .iter()
            .map(|w| RecipientWindow::per_seconds(w.limit, w.window_s))
            .collect(),
        on_redis_error: match config.limit.on_redis_error {
            OnRedisError::FailOpen => RedisErrorPolicy::FailOpen,
            OnRedisError::FailClosed => RedisErrorPolicy::FailClosed,
        },
        key_prefix: config.limit.key_prefix.clone(),
        instances: config.limit.instances,
        ..LimitConfig::default()
    }
}

/// The global limiter and the per-recipient limiter (none when no windows are configured).
pub async fn build_limiters(
    config: &Config,
) -> Result<(Arc<dyn RateLimiter>, Option<Arc<dyn RecipientLimiter>>)> {
    let lc = limit_config(config);
    lc.validate().map_err(|e| anyhow::anyhow!("limit.{e}"))?;
    let windows = !lc.recipient_windows.is_empty();
    match &config.redis_url {
        Some(url) => {
            let client = sms_limit::connect_client(url.expose(), &lc)
                .await
                .context("connecting to Redis")?;
            let global = RedisLimiter::from_client(client.clone(), &lc)
                .await
                .context("loading the Redis limiter")?;
            let recipient: Option<Arc<dyn RecipientLimiter>> = if windows {
                Some(Arc::new(
                    RedisRecipientLimiter::from_client(client, &lc)
                        .await
                        .context("loading the Redis limiter")?,
                ))
            } else {
                None
            };
            Ok((Arc::new(global), recipient))
        }
        None => {
            let global = InProcessLimiter::new(lc.global_per_second, lc.global_window())
                .map_err(|e| anyhow::anyhow!("limit.{e}"))?;
            let recipient: Option<Arc<dyn RecipientLimiter>> = if windows {
                Some(Arc::new(
                    InProcessRecipientLimiter::new(lc.recipient_windows.clone())
                        .map_err(|e| anyhow::anyhow!("limit.{e}"))?,
                ))
            } else {
                None
            };
            Ok((Arc::new(global), recipient))
        }
    }
}

/// The failover settings from the `[failover]` and `[queue]` sections.
pub fn failover_config(config: &Config) -> FailoverConfig {
    let f = &config.failover;
    let q = &config.queue;
    FailoverConfig {
        consecutive_failures: f.consecutive_failures,
        slow_threshold: Duration::from_millis(f.slow_threshold_ms),
        attempt_timeout: Duration::from_millis(f.attempt_timeout_ms),
        cooldown: Duration::from_secs(f.cooldown_s),
        on_timeout: match f.on_timeout {
            OnTimeout::Requeue => TimeoutPolicy::Requeue,
            OnTimeout::Fail => TimeoutPolicy::Fail,
        },
        billing_utc_offset_hours: f.billing_utc_offset_hours,
        max_attempts: q.max_attempts,
        backoff_base: Duration::from_millis(q.backoff_base_ms),
        backoff_max: Duration::from_secs(q.backoff_max_s),
        lease: Duration::from_secs(q.lease_s),
        drain_batch: q.drain_batch,
        drain_interval: Duration::from_millis(q.drain_interval_ms),
        ..FailoverConfig::default()
    }
}

/// Simulated vendors by name, for fault control over HTTP.
pub type SimulatedByName = HashMap<String, Arc<SimulatedVendor>>;

/// The vendors in tie-break order, and the simulated ones by name for fault control.
pub fn build_vendors(
    config: &Config,
    log: &DeliveryLog,
) -> Result<(Vec<VendorEntry>, SimulatedByName)> {
    let mut named: Vec<(&String, &crate::config::VendorSection)> = config.vendors.iter().collect();
    named.sort_by_key(|(name, v)| (v.order, name.as_str()));
    let mut entries = Vec::new();
    let mut simulated = HashMap::new();
    for (seed, (name, section)) in named.into_iter().enumerate() {
        let id =
            VendorId::new(name).map_err(|e| anyhow::anyhow!("vendors.{name}: {}", e.problem))?;
        let fees: Arc<dyn FeeSchedule> = Arc::new(match &section.fees {
            Some(tiers) => {
                let tiers: Vec<sms_providers::fees::Tier> = tiers
                    .iter()
                    .map(|t| t.clone().try_into())
                    .collect::<Result<_, _>>()
                    .map_err(|e| anyhow::anyhow!("vendors.{name}.fees: {e}"))?;
                TieredFeeSchedule::from_tiers(tiers)
                    .map_err(|e| anyhow::anyhow!("vendors.{name}.fees: {e}"))?
            }
            None => fees::default_for(name).with_context(|| {
                format!("vendors.{name}.fees: no built-in price list for {name:?}; give one")
            })?,
        });
        match section.kind.as_str() {
            "simulated" => {
                let settings: SimulationSettings = match &section.simulation {
                    Some(v) => v
                        .clone()
                        .try_into()
                        .map_err(|e| anyhow::anyhow!("vendors.{name}.simulation: {e}"))?,
                    None => SimulationSettings::healthy(20, 10),
                };
                let vendor = Arc::new(
                    SimulatedVendor::new(id, settings, seed as u64 + 1, log.clone())
                        .map_err(|e| anyhow::anyhow!("vendors.{name}.simulation: {e}"))?,
                );
                simulated.insert(name.clone(), vendor.clone());
                entries.push(VendorEntry { vendor, fees });
            }
            other => {
                let vendor = crate::real::build(other, id, section.settings.as_ref())
                    .map_err(|e| anyhow::anyhow!("vendors.{name}.settings: {e:#}"))?;
                entries.push(VendorEntry { vendor, fees });
            }
        }
    }
    if entries.is_empty() {
        bail!("vendors: expected at least one vendor");
    }
    Ok((entries, simulated))
}

/// Everything `serve` runs.
pub struct App {
    /// Shared by the handlers.
    pub state: AppState,
    /// The queue's drainer.
    pub drainer: DrainerHandle,
    /// The retention task.
    pub retention: tokio::task::JoinHandle<()>,
}

/// Builds the gateway and starts its drainer and retention task.
pub async fn build_app(config: &Config) -> Result<App> {
    let store = open_store(config).await?;
    let (limiter, recipient_limiter) = build_limiters(config).await?;
    // Nothing in `serve` reads deliveries back from memory, and a list of every one
    // would grow without bound: the file, when configured, is the only record.
    let log = match &config.simulation_log {
        Some(path) => DeliveryLog::append_only_to(path)
            .with_context(|| format!("simulation_log: opening {}", path.display()))?,
        None => DeliveryLog::discarding(),
    };
    let (vendors, simulated) = build_vendors(config, &log)?;
    let metrics = Metrics::new();
    let mut gateway = Gateway::new(
        vendors,
        limiter,
        recipient_limiter,
        store.queue.clone(),
        store.ledger.clone(),
        Arc::new(SystemClock),
        failover_config(config),
    )
    .map_err(|e| anyhow::anyhow!("failover: {e}"))?;
    gateway.set_observer(metrics.clone());
    let gateway = Arc::new(gateway);
    gateway.init().await.context("reading billed volumes")?;
    let drainer = gateway.start_drainer();
    let retention = spawn_retention(
        store.queue.clone(),
        Duration::from_secs(config.queue.retention_h * 3600),
    );
    tracing::info!(store = store.kind, limiter = if config.redis_url.is_some() { "redis" } else { "in-process" },
        current = %gateway.current_vendor(), "gateway ready");
    let tokens = config
        .api_tokens
        .iter()
        .map(|t| t.expose().to_owned())
        .collect();
    let state = AppState {
        gateway,
        queue: store.queue,
        metrics,
        tokens: Arc::new(tokens),
        simulated: Arc::new(simulated),
    };
    Ok(App {
        state,
        drainer,
        retention,
    })
}

/// Removes sent messages past retention, a small batch at a time, every minute.
fn spawn_retention(queue: Arc<dyn DeferredQueue>, keep: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Ok(keep) = chrono::Duration::from_std(keep) else {
                return;
            };
            let before = chrono::Utc::now() - keep;
            loop {
                match queue.purge_sent(before, 500).await {
                    Ok(500) => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "retention: purge failed");
                        break;
                    }
                }
            }
        }
    })
}

/// `sms-app serve`: until SIGTERM or Ctrl-C, then a graceful stop.
pub async fn serve(config: Config) -> Result<()> {
    if config.api_tokens.is_empty() {
        tracing::warn!(
            "no API tokens configured (SMS_API_TOKENS): every /v1 request will be refused"
        );
    }
    let app = build_app(&config).await?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listen: binding {}", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let router = router(app.state.clone(), config.max_body_bytes);
    // Answers go out at once: with Nagle's algorithm a response written in two parts
    // waits for the client's delayed acknowledgement of the first (tens of ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    tracing::info!("shutting down: finishing in-flight sends, releasing leases");
    app.retention.abort();
    app.drainer.shutdown().await;
    if let Err(e) = app.state.gateway.flush().await {
        tracing::warn!(error = %e, "could not write the last billed usage to the ledger");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
