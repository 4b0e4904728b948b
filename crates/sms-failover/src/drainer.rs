//! The drainer: a task of its own that drains the deferred queue at start-up, on every
//! tick and when asked (after a fast success), one pass at a time.
//!
//! It never runs on a request's task (the original drained on the request's context,
//! which was cancelled when the request ended), and it runs without new traffic too (the
//! original only drained after a live success, so stored messages could wait forever).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::gateway::Gateway;

/// After a pass that found nothing due, a pass asked for by a fast success waits until
/// this long after that pass began. Every success asks; without the gap a busy gateway
/// with an empty queue would run an empty claim (a database write) per request.
pub(crate) const TRIGGERED_PASS_GAP: std::time::Duration = std::time::Duration::from_millis(100);

/// The running drainer. Dropping it leaves the task running; call [`Self::shutdown`].
pub struct DrainerHandle {
    stop: Arc<AtomicBool>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl DrainerHandle {
    /// Stops ticking, lets the message being sent finish, gives back the claimed messages
    /// not yet attempted, and waits for the task to end.
    pub async fn shutdown(self) {
        self.stop.store(true, Ordering::Release);
        // `notify_one` keeps a permit if the task is not waiting yet, so it cannot miss it.
        self.wake.notify_one();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "drainer task ended abnormally");
        }
    }
}

impl Gateway {
    /// Starts the drainer task (one per gateway). It drains at once (messages left by a
    /// previous run), then on every `drain_interval` tick and on every trigger.
    pub fn start_drainer(self: &Arc<Self>) -> DrainerHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let gateway = Arc::clone(self);
        let task = {
            let (stop, wake) = (stop.clone(), wake.clone());
            tokio::spawn(async move {
                // The start-up pass below runs at once; the first tick comes one period later.
                let period = gateway.config().drain_interval;
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                while !stop.load(Ordering::Acquire) {
                    let began = tokio::time::Instant::now();
                    let found_nothing = match gateway.drain(&stop).await {
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
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let asked = tokio::select! {
                        _ = tick.tick() => false,
                        _ = gateway.drain_wanted().notified() => true,
                        _ = wake.notified() => false,
                    };
                    if asked && found_nothing {
                        tokio::select! {
                            _ = tokio::time::sleep_until(began + TRIGGERED_PASS_GAP) => {}
                            _ = wake.notified() => {}
                        }
                    }
                }
            })
        };
        DrainerHandle { stop, wake, task }
    }
}
