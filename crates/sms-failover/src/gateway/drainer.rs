//! The drainer: a task of its own that drains the deferred queue at start-up, on every
//! tick, when the earliest stored message falls due, and when asked (after a fast
//! success, or when a message is scheduled), one pass at a time.
//!
//! Between passes it reads the deployment's billed totals from the ledger, every
//! [`TOTALS_REFRESH`](super::TOTALS_REFRESH) and soon after a switch, so that an
//! instance's prices follow what the others billed.
//!
//! It never runs on a request's task, so a pass is not cancelled when the request that
//! asked for it ends, and it runs without new traffic too, so stored messages never
//! wait for a live success to be retried.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::Gateway;

/// After a pass that found nothing due, a pass asked for by a fast success waits until
/// this long after that pass began. Every success asks; without the gap a busy gateway
/// with an empty queue would run an empty claim (a database write) per request.
const TRIGGERED_PASS_GAP: Duration = Duration::from_millis(100);

/// The running drainer. Dropping it leaves the task running; call [`Self::shutdown`].
pub struct DrainerHandle {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl DrainerHandle {
    /// Stops ticking, lets the message being sent finish, gives back the claimed messages
    /// not yet attempted, and waits for the task to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "drainer task ended abnormally");
        }
    }
}

/// Sleeps `wait`, or for ever without one.
async fn sleep_or_never(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

impl Gateway {
    /// How long until the earliest stored message falls due, when that is ahead: the
    /// drainer wakes then rather than at its next tick, so a scheduled message goes out
    /// on time. A message due already (claimed by another instance, or left by a pass
    /// that ended early) waits for the tick, as before, rather than spin the drainer.
    async fn next_due_in(&self) -> Option<Duration> {
        match self.queue.next_due().await {
            Ok(Some(due)) => (due - self.clock.now())
                .to_std()
                .ok()
                .filter(|d| !d.is_zero()),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the next due time; waiting for the tick");
                None
            }
        }
    }

    /// Starts the drainer task (one per gateway). It drains at once (messages left by a
    /// previous run), then on every `drain_interval` tick and on every trigger.
    pub fn start_drainer(self: &Arc<Self>) -> DrainerHandle {
        let stop = CancellationToken::new();
        let task = tokio::spawn(Arc::clone(self).run_drainer(stop.clone()));
        DrainerHandle { stop, task }
    }

    async fn run_drainer(self: Arc<Self>, stop: CancellationToken) {
        // The start-up pass below runs at once; the first tick comes one period later.
        let period = self.config.drain_interval;
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_refresh = Instant::now() + super::TOTALS_REFRESH;
        while !stop.is_cancelled() {
            let began = Instant::now();
            let stale = self
                .totals_stale
                .swap(false, std::sync::atomic::Ordering::Relaxed);
            if stale || began >= next_refresh {
                next_refresh = began + super::TOTALS_REFRESH;
                if let Err(e) = self.refresh_totals().await {
                    tracing::warn!(error = %e, "could not read the billed totals; prices use this instance's counts until the next read");
                }
            }
            let found_nothing = match self.drain(&stop).await {
                Ok(report) if report.claimed > 0 => {
                    tracing::debug!(?report, "drain pass");
                    false
                }
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "drain pass failed");
                    false
                }
            };
            let due = self.next_due_in().await;
            let asked = tokio::select! {
                _ = tick.tick() => false,
                () = sleep_or_never(due) => false,
                _ = self.drain_wanted.notified() => true,
                _ = stop.cancelled() => false,
            };
            if asked && found_nothing {
                tokio::select! {
                    _ = tokio::time::sleep_until(began + TRIGGERED_PASS_GAP) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
    }
}
