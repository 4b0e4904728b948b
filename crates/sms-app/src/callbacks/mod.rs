//! Posting status events to the clients' callback URLs.
//!
//! The gateway stores each event in the callback outbox (see `sms_failover`); the
//! dispatcher here claims due events in batches under a lease, posts them concurrently,
//! and records each outcome: a 2xx answer settles the event for good; anything else
//! (another status, a timeout, a refused connection) is retried with exponential
//! backoff (the n-th retry waits between half and all of `first_retry_ms × 2^(n-1)`,
//! at most `max_retry_ms`) until `retry_for_s` after the event was made, then the event
//! is kept as failed. Instances sharing a store share the outbox; the lease keeps two of them from
//! posting one event at once.
//!
//! Every post carries:
//! - `X-Sms-Event-Id`: the event's id, the same on every attempt, so a client can drop
//!   a repeat (an endpoint that took an event but answered too late gets it again);
//! - `X-Sms-Signature: t=<unix seconds>,v1=<hex>`: HMAC-SHA256 under
//!   `callbacks.secret` of `<t>.<body>`, the body's exact bytes. A client recomputes it
//!   and compares in constant time, and refuses a `t` far from its own clock.
//!
//! Memory stays bounded whatever the endpoints do: events wait in the store, and at
//! most `concurrency` are in flight.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sms_core::{CallbackOutbox, CallbackOutcome, ClaimedCallback, Clock};
use tokio_util::sync::CancellationToken;

use crate::callback_guard as guard;
use crate::config::CallbacksConfig;
use crate::metrics::Metrics;

/// The header carrying the event id.
pub const EVENT_ID_HEADER: &str = "x-sms-event-id";
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-sms-signature";

/// How long the dispatcher rests when no event is due.
const IDLE: Duration = Duration::from_millis(250);
/// How long it rests after the store failed.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How often it counts the outbox for the metrics.
const COUNT_EVERY: Duration = Duration::from_secs(15);

/// The signature header's value for `body` signed at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Posts the outbox's events.
pub struct Dispatcher {
    outbox: Arc<dyn CallbackOutbox>,
    client: reqwest::Client,
    secret: Vec<u8>,
    config: CallbacksConfig,
    owner: String,
    clock: Arc<dyn Clock>,
    metrics: Option<Arc<Metrics>>,
}

impl Dispatcher {
    /// A dispatcher claiming as `owner`, signing with `secret`.
    pub fn new(
        outbox: Arc<dyn CallbackOutbox>,
        secret: &str,
        config: CallbacksConfig,
        owner: String,
        clock: Arc<dyn Clock>,
        metrics: Option<Arc<Metrics>>,
    ) -> anyhow::Result<Self> {
        let mut client = reqwest::Client::builder();
        if !config.allow_private_hosts {
            client = client.dns_resolver(Arc::new(guard::PublicOnly));
        }
        let client = client
            .timeout(Duration::from_millis(config.timeout_ms))
            .user_agent(concat!("sms-gateway/", env!("CARGO_PKG_VERSION")))
            // A client's endpoint answers itself: following a redirect would post a
            // signed event somewhere the client did not name.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            outbox,
            client,
            secret: secret.as_bytes().to_vec(),
            config,
            owner,
            clock,
            metrics,
        })
    }

    /// Runs until `stop`; posts in flight then finish and are recorded before it ends.
    ///
    /// Up to `concurrency` posts are in flight, and a slot that frees is filled at once
    /// with the next due event: an endpoint that answers slowly holds only its own
    /// posts' slots, not the others' events.
    pub async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        let slots = this.config.concurrency as usize;
        let mut in_flight = tokio::task::JoinSet::new();
        let mut counted_at: Option<tokio::time::Instant> = None;
        while !stop.is_cancelled() {
            if counted_at.is_none_or(|at| at.elapsed() >= COUNT_EVERY) {
                counted_at = Some(tokio::time::Instant::now());
                if let (Some(metrics), Ok(counts)) = (&this.metrics, this.outbox.counts().await) {
                    metrics.callbacks(counts);
                }
            }
            let room = slots.saturating_sub(in_flight.len());
            let mut rest = IDLE;
            if room > 0 {
                let limit = u32::try_from(room).unwrap_or(u32::MAX);
                match this
                    .outbox
                    .claim(&this.owner, this.clock.now(), this.lease(), limit)
                    .await
                {
                    Ok(claimed) => {
                        let full = claimed.len() == room;
                        for claim in claimed {
                            let dispatcher = Arc::clone(&this);
                            in_flight.spawn(async move { dispatcher.deliver(claim).await });
                        }
                        if full {
                            // More may be due: claim again once a slot frees.
                            rest = Duration::ZERO;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not claim status events to post");
                        rest = STORE_RETRY;
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                () = tokio::time::sleep(rest), if in_flight.len() < slots => {}
            }
        }
        // Posts in flight finish and are recorded; the rest wait in the outbox.
        while in_flight.join_next().await.is_some() {}
    }

    /// Claims one batch of due events and posts them all; returns how many it claimed.
    /// (`run` keeps its slots full instead; this is the same work, one batch at a time.)
    #[cfg(test)]
    pub async fn pass(&self) -> Result<usize, sms_core::StoreError> {
        use futures_util::StreamExt;
        let concurrency = self.config.concurrency as usize;
        let claimed = self
            .outbox
            .claim(
                &self.owner,
                self.clock.now(),
                self.lease(),
                self.config.concurrency,
            )
            .await?;
        let count = claimed.len();
        futures_util::stream::iter(claimed)
            .for_each_concurrent(concurrency, |claim| self.deliver(claim))
            .await;
        Ok(count)
    }

    /// Long enough for a post and the write of its outcome.
    fn lease(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms).saturating_mul(2) + Duration::from_secs(10)
    }

    /// Posts one event and records how it went.
    async fn deliver(&self, claim: ClaimedCallback) {
        let outcome = match self.post(&claim).await {
            Ok(()) => CallbackOutcome::Delivered,
            Err(error) => self.after_failure(&claim, error),
        };
        if let Some(metrics) = &self.metrics {
            metrics.callback_attempt(&outcome);
        }
        match &outcome {
            CallbackOutcome::Failed { error } => tracing::warn!(
                event = %claim.event.id, status = %claim.event.status,
                message = claim.event.message_id.map(tracing::field::display),
                attempts = claim.attempts, %error,
                "giving up on a status event: its endpoint kept failing"
            ),
            CallbackOutcome::Retry { error, .. } => tracing::debug!(
                event = %claim.event.id, attempts = claim.attempts, %error,
                "status event post failed; retrying later"
            ),
            CallbackOutcome::Delivered => {}
        }
        let id = claim.event.id;
        match self
            .outbox
            .settle(id, claim.token, outcome, self.clock.now())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(event = %id, "a status event's lease lapsed during its post; another claim has it")
            }
            // The lease lapses and the event is posted again: the client sees the same
            // event id twice, never an event lost.
            Err(e) => {
                tracing::warn!(event = %id, error = %e, "could not record a status event's post")
            }
        }
    }

    /// One post of the event; the error says what went wrong.
    async fn post(&self, claim: &ClaimedCallback) -> Result<(), String> {
        let event = &claim.event;
        // An address in the URL itself is not resolved: check it here.
        if !self.config.allow_private_hosts
            && let Some(refusal) = guard::refusal(&event.url)
        {
            return Err(refusal);
        }
        let signature = sign(&self.secret, self.clock.now().timestamp(), &event.body);
        let answer = self
            .client
            .post(event.url.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_ID_HEADER, event.id.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(event.body.clone())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", answer.status()))
        }
    }

    /// What follows a failed post: a retry after a backoff, or the end once the
    /// event's time or attempts are used up.
    fn after_failure(&self, claim: &ClaimedCallback, error: String) -> CallbackOutcome {
        // Half the exponential delay for sure, the other half at random: a failing
        // endpoint is never retried at once, and events that failed together spread.
        let (first, max) = (
            Duration::from_millis(self.config.first_retry_ms),
            Duration::from_millis(self.config.max_retry_ms),
        );
        let delay = sms_failover::backoff_delay(claim.attempts, first, max, 1.0) / 2
            + sms_failover::jittered_backoff(claim.attempts, first, max) / 2;
        let at = sms_failover::after(self.clock.now(), delay);
        let deadline = sms_failover::after(
            claim.event.created_at,
            Duration::from_secs(self.config.retry_for_s),
        );
        if claim.attempts >= self.config.max_attempts || at > deadline {
            CallbackOutcome::Failed { error }
        } else {
            CallbackOutcome::Retry { at, error }
        }
    }
}

/// A post's error without the URL (which can carry a client's query secrets).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests;
