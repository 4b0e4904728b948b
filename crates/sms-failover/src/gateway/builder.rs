//! Building a [`Gateway`]: the collaborators every gateway needs, optional ones with
//! defaults, and the checks of the vendor list and configuration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::FixedOffset;
use sms_core::{
    CallbackOutbox, CallbackUrl, Clock, DeferredQueue, DeliveryLog, RateLimiter, RecipientLimiter,
    SharedBoard, SystemClock, Templates, UsageLedger, VendorId,
};
use tokio::sync::Notify;

use super::{Gateway, VendorEntry};
use crate::batch::{BatchWriter, Deliveries, LateReceipts};
use crate::callbacks::StatusCallbacks;
use crate::config::FailoverConfig;
use crate::error::FailoverError;
use crate::events::GatewayObserver;
use crate::health::Health;
use crate::write_behind::WriteBehind;

/// Most vendors a gateway routes between: a message's route is a 64-bit set of vendors.
/// No deployment comes near this many.
pub(crate) const MAX_VENDORS: usize = 64;

/// Builds a [`Gateway`]: the collaborators every gateway needs are the arguments of
/// [`Gateway::builder`]; the rest have defaults.
pub struct GatewayBuilder {
    vendors: Vec<VendorEntry>,
    limiter: Arc<dyn RateLimiter>,
    queue: Arc<dyn DeferredQueue>,
    ledger: Arc<dyn UsageLedger>,
    recipient_limiter: Option<Arc<dyn RecipientLimiter>>,
    blocklist: Option<Arc<dyn sms_core::Blocklist>>,
    spend_gate: Option<Arc<dyn sms_core::SpendGate>>,
    clock: Arc<dyn Clock>,
    config: FailoverConfig,
    observer: Option<Arc<dyn GatewayObserver>>,
    deliveries: Option<Arc<dyn DeliveryLog>>,
    callbacks: Option<(Arc<dyn CallbackOutbox>, Option<CallbackUrl>)>,
    templates: Templates,
    board: Option<Arc<dyn SharedBoard>>,
}

impl Gateway {
    /// Starts building a gateway over `vendors` (in configured order: it breaks price
    /// ties), limited by `limiter`, storing deferred messages in `queue` and billed
    /// usage in `ledger`.
    pub fn builder(
        vendors: Vec<VendorEntry>,
        limiter: Arc<dyn RateLimiter>,
        queue: Arc<dyn DeferredQueue>,
        ledger: Arc<dyn UsageLedger>,
    ) -> GatewayBuilder {
        GatewayBuilder {
            vendors,
            limiter,
            queue,
            ledger,
            recipient_limiter: None,
            blocklist: None,
            spend_gate: None,
            clock: Arc::new(SystemClock),
            config: FailoverConfig::default(),
            observer: None,
            deliveries: None,
            callbacks: None,
            templates: Templates::default(),
            board: None,
        }
    }
}

impl GatewayBuilder {
    /// Limits how often each recipient is sent to (default: no per-recipient limit).
    pub fn recipient_limiter(mut self, limiter: Arc<dyn RecipientLimiter>) -> Self {
        self.recipient_limiter = Some(limiter);
        self
    }

    /// Checks each drained message against `blocklist` before its attempt: recipients
    /// blocked since it was accepted are left out (a message left with none is dead).
    /// Default: no check in the drain (the caller checks requests as they come).
    pub fn blocklist(mut self, blocklist: Arc<dyn sms_core::Blocklist>) -> Self {
        self.blocklist = Some(blocklist);
        self
    }

    /// Asks `gate` before each drained message's attempt whether its client may spend:
    /// a message whose client (or the deployment) reached a monthly spend cap after the
    /// message was accepted waits, its attempt not counted, until the gate says when to
    /// look again (or its deadline, when that comes first). Default: the drain sends
    /// whatever was accepted.
    pub fn spend_gate(mut self, gate: Arc<dyn sms_core::SpendGate>) -> Self {
        self.spend_gate = Some(gate);
        self
    }

    /// Shares vendor health on `board` with the deployment's other instances, under
    /// the configuration's `instance_id` (which must be unique in the deployment).
    /// Default: this instance decides alone. Start the task that keeps it in step with
    /// [`Gateway::start_sharing`].
    pub fn board(mut self, board: Arc<dyn SharedBoard>) -> Self {
        self.board = Some(board);
        self
    }

    /// The source of wall time (default: [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The failover settings (default: [`FailoverConfig::default`]).
    pub fn config(mut self, config: FailoverConfig) -> Self {
        self.config = config;
        self
    }

    /// The logical templates and each vendor's template for them (default: none, so
    /// the caller's template name goes to every vendor unchanged). With templates, a
    /// message goes only to vendors that have its template, and a request naming an
    /// unknown template or the wrong number of arguments is refused.
    pub fn templates(mut self, templates: Templates) -> Self {
        self.templates = templates;
        self
    }

    /// Sends every [`GatewayEvent`](crate::GatewayEvent) to `observer` (default: none).
    pub fn observer(mut self, observer: Arc<dyn GatewayObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Records, for each recipient a vendor accepts a message for, the vendor's id for
    /// it in `log`, so that delivery receipts find their message (default: none).
    pub fn deliveries(mut self, log: Arc<dyn DeliveryLog>) -> Self {
        self.deliveries = Some(log);
        self
    }

    /// Stores a status event in `outbox` for each change of a message's status (queued,
    /// sent, delivered or undelivered per recipient, dead, expired), addressed to the
    /// request's callback URL or else to `default_url`; messages with neither make none
    /// (default: no events).
    pub fn callbacks(
        mut self,
        outbox: Arc<dyn CallbackOutbox>,
        default_url: Option<CallbackUrl>,
    ) -> Self {
        self.callbacks = Some((outbox, default_url));
        self
    }

    /// The gateway, once the configuration and the vendor list are found valid: at least
    /// one vendor, no two with one name, at most 64, and templates that name only these
    /// vendors.
    pub fn build(self) -> Result<Gateway, FailoverError> {
        let Self {
            vendors,
            limiter,
            queue,
            ledger,
            recipient_limiter,
            blocklist,
            spend_gate,
            clock,
            config,
            observer,
            deliveries,
            callbacks,
            templates,
            board,
        } = self;
        config.validate()?;
        if vendors.is_empty() {
            return Err(FailoverError::NoVendors);
        }
        if vendors.len() > MAX_VENDORS {
            return Err(FailoverError::TooManyVendors {
                max: MAX_VENDORS,
                found: vendors.len(),
            });
        }
        let ids: Vec<VendorId> = vendors.iter().map(|v| v.vendor.id()).collect();
        let vendor_count = ids.len();
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(FailoverError::DuplicateVendor(id.clone()));
            }
        }
        templates
            .check_vendors(&ids)
            .map_err(FailoverError::InvalidTemplates)?;
        let template_routes: HashMap<String, u64> = templates
            .iter()
            .map(|(name, template)| {
                let mask = ids
                    .iter()
                    .enumerate()
                    .filter(|(_, id)| template.at(id).is_some())
                    .fold(0u64, |mask, (i, _)| mask | 1 << i);
                (name.to_owned(), mask)
            })
            .collect();
        let max_permits = limiter.capacity();
        let send_rate = max_permits
            .zip(limiter.window())
            .filter(|(_, window)| !window.is_zero())
            .map(|(permits, window)| f64::from(permits) / window.as_secs_f64());
        let billing_offset = FixedOffset::east_opt(config.billing_utc_offset_hours * 3600)
            .ok_or_else(|| FailoverError::InvalidConfig {
                field: "billing_utc_offset_hours",
                problem: format!(
                    "expected an offset between -23 and 23 hours, found {}",
                    config.billing_utc_offset_hours
                ),
            })?;
        let health = Arc::new(Mutex::new(Health::new(
            vendors.iter().map(|v| v.fees.clone()).collect(),
            &config,
            billing_offset,
            clock.now(),
        )));
        let late_receipts = LateReceipts::default();
        let callbacks =
            callbacks.map(|(outbox, url)| StatusCallbacks::new(outbox, url, clock.clone()));
        let write_behind = Arc::new(WriteBehind::new(
            health.clone(),
            ids.clone(),
            ledger.clone(),
            queue.clone(),
        ));
        Ok(Gateway {
            vendors: vendors.into_iter().map(|v| v.vendor).collect(),
            ids,
            health,
            shared: board
                .map(|board| super::shared::Shared::new(board, config.instance_id.clone())),
            write_behind,
            limiter,
            recipient_limiter,
            blocklist,
            spend_gate,
            queue,
            ledger,
            clock,
            config,
            observer,
            deliveries: deliveries.map(|log| {
                BatchWriter::new(Deliveries {
                    log,
                    late: late_receipts.clone(),
                })
            }),
            late_receipts,
            callbacks,
            receipt_windows: Mutex::new(vec![Default::default(); vendor_count]),
            templates,
            template_routes,
            max_permits,
            send_rate,
            latency_micros: std::sync::atomic::AtomicU64::new(0),
            totals_stale: std::sync::atomic::AtomicBool::new(false),
            drain_wanted: Notify::new(),
            drain_running: tokio::sync::Mutex::new(()),
        })
    }
}
