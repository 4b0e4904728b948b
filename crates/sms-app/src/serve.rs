//! `sms-app serve`: the send path behind the HTTP API, with its drainer and the retention
//! task, until SIGTERM or Ctrl-C.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sms_core::ReceiptPull;
use sms_providers::delivery_log::DeliveryLog as SimulatedDeliveries;
use sms_providers::receipts::ReceiptFormat;
use tokio_util::sync::CancellationToken;

use crate::callbacks::Dispatcher;
use crate::config::Config;
use crate::http::receipts::{ReceiptEndpoint, ReceiptEndpoints};
use crate::http::{AppState, router};
use crate::metrics::Metrics;
use crate::pull::Puller;
use crate::spend::{Observers, Spend};
use crate::wire::{Extras, SendPath, Store, build_send_path, take_simulated_receipts};

/// How long a stop waits for a receipt pull under way.
const PULL_STOP_WAIT: Duration = Duration::from_secs(10);

/// Seed of the first simulated vendor under `serve`.
const SEED: u64 = 1;

/// `sms-app serve`: until SIGTERM or Ctrl-C, then a graceful stop.
pub async fn run(config: Config) -> Result<()> {
    if config.api_tokens.is_empty() && config.clients.is_empty() {
        tracing::warn!(
            "no API tokens configured (SMS_API_TOKENS or [clients]): every /v1 request will be refused"
        );
    }
    // Nothing in `serve` reads deliveries back from memory, and a list of every one
    // would grow without bound: the file, when configured, is the only record.
    let delivery_log = match &config.simulation_log {
        Some(path) => SimulatedDeliveries::append_only_to(path)
            .with_context(|| format!("simulation_log: opening {}", path.display()))?,
        None => SimulatedDeliveries::discarding(),
    };
    let metrics = Metrics::new();
    let clients = crate::config::clients::by_digest(&config.clients, &config.api_tokens);
    let spend = Arc::new(Spend::new(
        clients.values().map(AsRef::as_ref),
        config.spend.cap(),
        config.spend.warn_at,
        billing_offset(&config)?,
    ));
    metrics.watch_spend(spend.clone());
    let send_path = build_send_path(
        &config,
        Extras {
            delivery_log,
            observer: Arc::new(Observers(vec![metrics.clone(), spend.clone()])),
            seed: SEED,
            spend_gate: spend
                .has_caps()
                .then(|| spend.clone() as Arc<dyn sms_core::SpendGate>),
        },
    )
    .await?;
    spend.attach(send_path.store.spend.clone());
    if config.callbacks.enabled()
        && let Some(url) = config.callbacks.default_url()?
    {
        spend.tell_warnings(send_path.store.callbacks.clone(), url);
    }
    spend.sync(chrono::Utc::now()).await;
    let stop_spend = CancellationToken::new();
    let spend_task = tokio::spawn(spend.clone().run(stop_spend.clone()));
    // Blocks made through other instances reach this one's copy of the blocklist.
    tokio::spawn(send_path.store.blocklist.clone().run(stop_spend.clone()));
    // A simulated vendor given a receipt secret pushes its receipts in-process.
    let receipting: Vec<&str> = config.receipts.secrets.keys().map(String::as_str).collect();
    let counter = metrics.clone();
    take_simulated_receipts(
        &send_path,
        &receipting,
        Arc::new(move |reports, applied| counter.receipts(reports, applied)),
    );
    // Delivery records live as long as messages, and at least as long as receipts may
    // still come for them.
    let keep = Duration::from_secs(config.queue.retention_h * 3600);
    let retention = spawn_retention(
        &send_path.store,
        keep,
        keep.max(Duration::from_secs(config.receipts.unknown_after_s)),
    );
    let stop_pull = CancellationToken::new();
    let pull = spawn_pull(&config, &send_path, &metrics, stop_pull.clone())?;
    let stop_callbacks = CancellationToken::new();
    let callbacks = match &config.callbacks.secret {
        Some(secret) => {
            let dispatcher = Dispatcher::new(
                send_path.store.callbacks.clone(),
                secret.expose(),
                config.callbacks.clone(),
                config.failover.instance_id.clone(),
                Arc::new(sms_core::SystemClock),
                Some(metrics.clone()),
            )?;
            tracing::info!("posting status events to the clients' callback URLs");
            Some(tokio::spawn(dispatcher.run(stop_callbacks.clone())))
        }
        None => None,
    };
    let exposed = |tokens: &[crate::config::Secret]| -> Vec<String> {
        tokens.iter().map(|t| t.expose().to_owned()).collect()
    };
    let operator_tokens = exposed(&config.operator_tokens);
    let state = AppState {
        gateway: send_path.gateway.clone(),
        queue: send_path.store.queue.clone(),
        metrics,
        clients: Arc::new(clients),
        operator_tokens: Arc::new(operator_tokens),
        simulated: Arc::new(send_path.simulated),
        deliveries: send_path.store.deliveries.clone(),
        receipts: Arc::new(receipt_endpoints(&config, &send_path.receipt_formats)?),
        unknown_after: chrono::Duration::seconds(
            i64::try_from(config.receipts.unknown_after_s).unwrap_or(i64::MAX),
        ),
        callbacks: config.callbacks.enabled().then(|| config.callbacks.clone()),
        blocklist: send_path.store.blocklist.clone(),
        client_limiter: send_path.client_limiter.clone(),
        spend,
    };
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listen: binding {}", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let router = router(state, config.max_body_bytes);
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
    retention.abort();
    // A pull under way stores what it was handed before it ends, within reason.
    stop_pull.cancel();
    if let Some(mut pull) = pull {
        if tokio::time::timeout(PULL_STOP_WAIT, &mut pull)
            .await
            .is_err()
        {
            tracing::warn!("a receipt pull did not finish in time; stopping it");
            pull.abort();
        }
    }
    send_path.drainer.shutdown().await;
    if let Err(e) = send_path.gateway.flush().await {
        tracing::warn!(error = %e, "could not write the last billed usage to the ledger");
    }
    // The spend of the last sends is written before the process ends.
    stop_spend.cancel();
    let _ = spend_task.await;
    // After the flush: the receipts it took into account join the board's tally.
    if let Some(sharing) = send_path.sharing {
        sharing.shutdown().await;
    }
    // Posts in flight finish and are recorded; the rest wait in the outbox.
    stop_callbacks.cancel();
    if let Some(callbacks) = callbacks {
        let _ = callbacks.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The zone of the billing calendar, in which spend months begin.
fn billing_offset(config: &Config) -> Result<chrono::FixedOffset> {
    let hours = config.failover.billing_utc_offset_hours;
    chrono::FixedOffset::east_opt(hours * 3600).with_context(|| {
        format!("failover.billing_utc_offset_hours: expected -23 to 23, found {hours}")
    })
}

/// Asks the real vendors without a receipt secret (so without push) for their
/// receipts, every `receipts.pull_interval_s`; none when none is pulled.
fn spawn_pull(
    config: &Config,
    send_path: &SendPath,
    metrics: &Arc<Metrics>,
    stop: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let pulled: HashMap<String, Arc<dyn ReceiptPull>> = send_path
        .pullers
        .iter()
        .filter(|(name, _)| !config.receipts.secrets.contains_key(*name))
        .map(|(name, vendor)| (name.clone(), Arc::clone(vendor)))
        .collect();
    if pulled.is_empty() || config.receipts.pull_interval_s == 0 {
        return Ok(None);
    }
    let puller = Puller::new(
        &pulled,
        send_path.store.deliveries.clone(),
        send_path.gateway.clone(),
        metrics.clone(),
        Duration::from_secs(config.receipts.pull_interval_s),
        config.receipts.pull_batch,
        chrono::Duration::seconds(
            i64::try_from(config.receipts.unknown_after_s).unwrap_or(i64::MAX),
        ),
    )?;
    for vendor in puller.vendors() {
        tracing::info!(%vendor, every_s = config.receipts.pull_interval_s, "no receipt push configured: pulling this vendor's receipts");
    }
    Ok(Some(tokio::spawn(puller.run(stop))))
}

/// Removes sent messages past retention, their delivery records, and the status events
/// already posted (or given up on), a small batch at a time, every minute.
fn spawn_retention(
    store: &Store,
    keep: Duration,
    keep_deliveries: Duration,
) -> tokio::task::JoinHandle<()> {
    let queue = store.queue.clone();
    let deliveries = store.deliveries.clone();
    let callbacks = store.callbacks.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let (Ok(keep), Ok(keep_deliveries)) = (
                chrono::Duration::from_std(keep),
                chrono::Duration::from_std(keep_deliveries),
            ) else {
                return;
            };
            let now = chrono::Utc::now();
            purge_all("sent messages", || {
                queue.purge_sent(now - keep, PURGE_BATCH)
            })
            .await;
            purge_all("delivery records", || {
                deliveries.purge(now - keep_deliveries, PURGE_BATCH)
            })
            .await;
            purge_all("posted status events", || {
                callbacks.purge(now - keep, PURGE_BATCH)
            })
            .await;
        }
    })
}

/// Rows deleted per retention statement.
const PURGE_BATCH: u32 = 500;

/// Runs `purge` until it deletes less than a whole batch, or fails.
async fn purge_all<F, Fut>(what: &str, mut purge: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, sms_core::StoreError>>,
{
    loop {
        match purge().await {
            Ok(n) if n >= u64::from(PURGE_BATCH) => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "retention: purging {what} failed");
                break;
            }
        }
    }
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

/// The receipt endpoint of each vendor with a secret.
fn receipt_endpoints(
    config: &Config,
    formats: &HashMap<String, ReceiptFormat>,
) -> Result<ReceiptEndpoints> {
    let mut endpoints = ReceiptEndpoints::new();
    for (name, secret) in &config.receipts.secrets {
        let format = *formats
            .get(name)
            .with_context(|| format!("receipts.secrets.{name}: no vendor {name:?}"))?;
        let vendor = sms_core::VendorId::new(name)
            .map_err(|e| anyhow::anyhow!("receipts.secrets.{name}: {}", e.problem))?;
        endpoints.insert(
            name.clone(),
            ReceiptEndpoint {
                vendor,
                format,
                secret: secret.expose().to_owned(),
            },
        );
        tracing::info!(vendor = %name, format = %format, "receipts accepted at /v1/receipts/{name}/<secret>");
    }
    Ok(endpoints)
}
