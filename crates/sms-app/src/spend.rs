//! Spend caps: what each client, and the whole deployment, spent this billing month,
//! and whether a cap is reached.
//!
//! Every accepted vendor call reports its cost (billed segments at the price tier in
//! force) with the client that sent the message. This instance adds it to its counts at
//! once, so its own next request already sees it, and writes it to the store's spend
//! ledger every [`SYNC_EVERY`], reading back what every instance spent. A cap is
//! therefore exact for one instance and, across instances, behind by at most what the
//! others spent in the last second or so.
//!
//! A cap is checked before a send: a request is refused once the spend has reached it,
//! so the request that crosses it is the last one sent. It is checked again before a
//! stored message (scheduled, or queued for a retry) goes out: a message whose client
//! reached its cap after accepting it waits, looked at again every [`HOLD_RECHECK`] and
//! at the turn of the month, until the cap lets it go or its deliver-by time passes.
//!
//! At `warn_at` of a cap the gateway warns once per month and cap: a log line,
//! `sms_spend_warnings_total` and, when status callbacks have a default address, a
//! `spend_warning` event posted there (stored with the next sync). The event's id is
//! the cap's and the month's, so the instances that each see the spend pass the share
//! store one event between them.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Datelike, FixedOffset, TimeZone, Utc};
use sms_core::sync::lock;
use sms_core::{
    BillingPeriod, CallbackOutbox, CallbackUrl, ClientId, Money, SpendGate, SpendHold, SpendLedger,
    SpendWarning,
};
use sms_failover::{GatewayEvent, GatewayObserver};
use tokio_util::sync::CancellationToken;

use crate::config::clients::Client;

/// How often the counts are written to the store and read back.
pub const SYNC_EVERY: Duration = Duration::from_millis(1000);

/// How long a stored message held back by a reached cap waits before it is looked at
/// again (at most until the next billing month): a cap raised meanwhile lets it go
/// within this time.
pub const HOLD_RECHECK: chrono::Duration = chrono::Duration::minutes(10);

/// Whose cap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One client's `monthly_spend_cap`.
    Client(Option<ClientId>),
    /// The deployment's `spend.monthly_cap`.
    Deployment,
}

impl Scope {
    /// The label of the scope in metrics and answers.
    pub fn label(&self) -> String {
        match self {
            Self::Client(client) => crate::config::clients::label(client.as_ref()).to_owned(),
            Self::Deployment => "(deployment)".to_owned(),
        }
    }
}

/// A cap that is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapReached {
    /// Whose.
    pub scope: Scope,
    /// The cap.
    pub cap: Money,
    /// What was spent this month.
    pub spent: Money,
}

/// One client's or the deployment's spend and cap, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendLine {
    /// Whose.
    pub scope: Scope,
    /// Spent this month.
    pub spent: Money,
    /// The cap, when one is set.
    pub cap: Option<Money>,
}

#[derive(Default)]
struct State {
    /// The month now (in the billing calendar).
    period: Option<BillingPeriod>,
    /// Every client's spend this month, as the ledger last said.
    stored: BTreeMap<Option<ClientId>, Money>,
    /// Taken for writing: part of the spend until a read of the ledger includes it.
    writing: BTreeMap<(BillingPeriod, Option<ClientId>), Money>,
    /// Spent here and not yet written.
    pending: BTreeMap<(BillingPeriod, Option<ClientId>), Money>,
    /// The caps that warned this month.
    warned: HashSet<Scope>,
    /// Warnings to store as callback events at the next sync.
    untold: Vec<SpendWarning>,
}

impl State {
    fn spent(&self, client: &Option<ClientId>) -> Money {
        let Some(period) = &self.period else {
            return Money::ZERO;
        };
        let key = (period.clone(), client.clone());
        self.stored.get(client).copied().unwrap_or_default()
            + self.writing.get(&key).copied().unwrap_or_default()
            + self.pending.get(&key).copied().unwrap_or_default()
    }

    fn total(&self) -> Money {
        let Some(period) = &self.period else {
            return Money::ZERO;
        };
        let this_month = |m: &BTreeMap<(BillingPeriod, Option<ClientId>), Money>| -> Money {
            m.iter()
                .filter(|((p, _), _)| p == period)
                .map(|(_, v)| *v)
                .sum()
        };
        self.stored.values().copied().sum::<Money>()
            + this_month(&self.writing)
            + this_month(&self.pending)
    }

    /// Moves to the month of `at`, forgetting last month's counts and warnings.
    fn roll(&mut self, period: BillingPeriod) {
        if self.period.as_ref() != Some(&period) {
            self.period = Some(period);
            self.stored.clear();
            self.warned.clear();
        }
    }
}

/// The spend of every client and of the deployment, against their caps.
pub struct Spend {
    ledger: OnceLock<Arc<dyn SpendLedger>>,
    /// Where warnings are told: the outbox and the default callback address.
    tell: OnceLock<(Arc<dyn CallbackOutbox>, CallbackUrl)>,
    offset: FixedOffset,
    caps: BTreeMap<Option<ClientId>, Money>,
    deployment_cap: Option<Money>,
    warn_at: f64,
    state: Mutex<State>,
    warnings: Mutex<BTreeMap<String, u64>>,
}

impl Spend {
    /// Caps of `clients` and the deployment's `deployment_cap`, warning at `warn_at` of
    /// each; months in the zone `offset`.
    pub fn new<'a>(
        clients: impl IntoIterator<Item = &'a Client>,
        deployment_cap: Option<Money>,
        warn_at: f64,
        offset: FixedOffset,
    ) -> Self {
        let caps = clients
            .into_iter()
            .filter_map(|c| c.spend_cap.map(|cap| (c.name.clone(), cap)))
            .collect();
        Self {
            ledger: OnceLock::new(),
            tell: OnceLock::new(),
            offset,
            caps,
            deployment_cap,
            warn_at,
            state: Mutex::new(State::default()),
            warnings: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether any cap is set (without one, nothing needs counting).
    pub fn has_caps(&self) -> bool {
        !self.caps.is_empty() || self.deployment_cap.is_some()
    }

    /// Where the counts are kept; set once, when the store is open.
    pub fn attach(&self, ledger: Arc<dyn SpendLedger>) {
        let _ = self.ledger.set(ledger);
    }

    /// Tells warnings to `url` through `outbox` from now on; set once, when the store is
    /// open and callbacks have a default address.
    pub fn tell_warnings(&self, outbox: Arc<dyn CallbackOutbox>, url: CallbackUrl) {
        let _ = self.tell.set((outbox, url));
    }

    fn period(&self, at: DateTime<Utc>) -> BillingPeriod {
        BillingPeriod::containing(at, self.offset)
    }

    /// The start of the billing month after the one of `at`.
    fn next_month(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let local = at.with_timezone(&self.offset);
        let (year, month) = match local.month() {
            12 => (local.year() + 1, 1),
            m => (local.year(), m + 1),
        };
        self.offset
            .with_ymd_and_hms(year, month, 1, 0, 0, 0)
            .single()
            .map_or(at + chrono::Duration::days(1), |t| t.with_timezone(&Utc))
    }

    /// Whether `client` may send now: `Err` names the first cap reached (its own, then
    /// the deployment's).
    pub fn check(&self, client: &Option<ClientId>, now: DateTime<Utc>) -> Result<(), CapReached> {
        if !self.has_caps() {
            return Ok(());
        }
        let mut state = lock(&self.state);
        state.roll(self.period(now));
        if let Some(cap) = self.caps.get(client) {
            let spent = state.spent(client);
            if spent >= *cap {
                return Err(CapReached {
                    scope: Scope::Client(client.clone()),
                    cap: *cap,
                    spent,
                });
            }
        }
        if let Some(cap) = self.deployment_cap {
            let spent = state.total();
            if spent >= cap {
                return Err(CapReached {
                    scope: Scope::Deployment,
                    cap,
                    spent,
                });
            }
        }
        Ok(())
    }

    /// Counts `cost`, spent by `client` at `at`.
    pub fn add(&self, client: Option<ClientId>, cost: Money, at: DateTime<Utc>) {
        // Counted with caps or without, so that a cap set later starts from the truth.
        if cost == Money::ZERO {
            return;
        }
        let period = self.period(at);
        let mut state = lock(&self.state);
        state.roll(period.clone());
        *state.pending.entry((period, client)).or_default() += cost;
        self.warn(&mut state, at);
    }

    /// Warns, once a month, of every cap past its `warn_at` share, seen at `at`.
    fn warn(&self, state: &mut State, at: DateTime<Utc>) {
        let near =
            |spent: Money, cap: Money| spent.micros() as f64 >= cap.micros() as f64 * self.warn_at;
        let mut crossed = Vec::new();
        for (client, cap) in &self.caps {
            let spent = state.spent(client);
            if near(spent, *cap) {
                crossed.push((Scope::Client(client.clone()), spent, *cap));
            }
        }
        if let Some(cap) = self.deployment_cap {
            let spent = state.total();
            if near(spent, cap) {
                crossed.push((Scope::Deployment, spent, cap));
            }
        }
        for (scope, spent, cap) in crossed {
            if state.warned.insert(scope.clone()) {
                let share = (self.warn_at * 100.0).round();
                let label = scope.label();
                tracing::warn!(scope = %label, %spent, %cap, "spend passed {share}% of its monthly cap");
                *lock(&self.warnings).entry(label.clone()).or_default() += 1;
                if self.tell.get().is_some()
                    && let Some(period) = &state.period
                {
                    let warning = SpendWarning::new(
                        &label,
                        &period.to_string(),
                        spent.to_string(),
                        cap.to_string(),
                        self.warn_at,
                        at,
                    );
                    state.untold.push(warning);
                }
            }
        }
    }

    /// Writes what was spent here and reads back every instance's spend.
    pub async fn sync(&self, now: DateTime<Utc>) {
        let Some(ledger) = self.ledger.get() else {
            return;
        };
        let batch = {
            let mut state = lock(&self.state);
            state.roll(self.period(now));
            let batch = std::mem::take(&mut state.pending);
            for (key, amount) in &batch {
                *state.writing.entry(key.clone()).or_default() += *amount;
            }
            batch
        };
        let mut by_period: BTreeMap<BillingPeriod, Vec<(Option<ClientId>, Money)>> =
            BTreeMap::new();
        for ((period, client), amount) in &batch {
            by_period
                .entry(period.clone())
                .or_default()
                .push((client.clone(), *amount));
        }
        let mut unwritten = Vec::new();
        for (period, amounts) in by_period {
            if let Err(e) = ledger.add_spend(&period, &amounts).await {
                tracing::warn!(error = %e, "could not write the spend; kept for the next try");
                unwritten.extend(amounts.into_iter().map(|(c, m)| ((period.clone(), c), m)));
            }
        }
        let period = self.period(now);
        let read = ledger.spend(&period).await;
        let untold = {
            let mut state = lock(&self.state);
            // What could not be written goes back to wait for the next try.
            for (key, amount) in unwritten {
                if let Some(w) = state.writing.get_mut(&key) {
                    *w = Money::from_micros(w.micros() - amount.micros());
                }
                *state.pending.entry(key).or_default() += amount;
            }
            state.writing.retain(|_, m| *m != Money::ZERO);
            match read {
                Ok(stored) if state.period.as_ref() == Some(&period) => {
                    // The read includes everything written so far.
                    state.stored = stored;
                    state.writing.clear();
                    self.warn(&mut state, now);
                }
                Ok(_) => state.writing.clear(),
                // Written but not read back: it stays counted until a read includes it.
                Err(e) => tracing::warn!(error = %e, "could not read the spend"),
            }
            std::mem::take(&mut state.untold)
        };
        self.tell(untold, now).await;
    }

    /// Stores `warnings` as callback events; what cannot be stored waits for the next
    /// sync.
    async fn tell(&self, warnings: Vec<SpendWarning>, now: DateTime<Utc>) {
        let Some((outbox, url)) = self.tell.get() else {
            return;
        };
        if warnings.is_empty() {
            return;
        }
        let events: Vec<_> = warnings.iter().map(|w| w.to_callback(url, now)).collect();
        if let Err(e) = outbox.enqueue(&events).await {
            tracing::warn!(error = %e, "could not store a spend warning's callback event; kept for the next try");
            lock(&self.state).untold.extend(warnings);
        }
    }

    /// Syncs every [`SYNC_EVERY`] until `stop`, then once more.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(SYNC_EVERY) => {}
                () = stop.cancelled() => break,
            }
            self.sync(Utc::now()).await;
        }
        self.sync(Utc::now()).await;
    }

    /// Every capped scope's spend this month, and the spend of clients without a cap.
    pub fn lines(&self, now: DateTime<Utc>) -> Vec<SpendLine> {
        let mut state = lock(&self.state);
        state.roll(self.period(now));
        let mut clients: Vec<Option<ClientId>> = self.caps.keys().cloned().collect();
        for c in state.stored.keys() {
            if !self.caps.contains_key(c) {
                clients.push(c.clone());
            }
        }
        let mut lines: Vec<SpendLine> = clients
            .into_iter()
            .map(|c| SpendLine {
                spent: state.spent(&c),
                cap: self.caps.get(&c).copied(),
                scope: Scope::Client(c),
            })
            .collect();
        lines.push(SpendLine {
            scope: Scope::Deployment,
            spent: state.total(),
            cap: self.deployment_cap,
        });
        lines
    }

    /// Warnings given so far, by scope label.
    pub fn warnings(&self) -> BTreeMap<String, u64> {
        lock(&self.warnings).clone()
    }
}

impl SpendGate for Spend {
    fn hold(&self, client: Option<ClientId>, now: DateTime<Utc>) -> Option<SpendHold> {
        let reached = self.check(&client, now).err()?;
        Some(SpendHold {
            until: self.next_month(now).min(now + HOLD_RECHECK),
            why: format!(
                "the monthly spend cap of {} ({}) is reached: {} spent",
                reached.scope.label(),
                reached.cap,
                reached.spent
            ),
        })
    }
}

impl GatewayObserver for Spend {
    fn on_event(&self, event: &GatewayEvent) {
        if let GatewayEvent::Attempt { cost, client, .. } = event {
            self.add(client.clone(), *cost, Utc::now());
        }
    }
}

/// Hands every event to each observer in turn.
pub struct Observers(pub Vec<Arc<dyn GatewayObserver>>);

impl GatewayObserver for Observers {
    fn on_event(&self, event: &GatewayEvent) {
        for observer in &self.0 {
            observer.on_event(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use chrono::TimeZone;
    use sms_core::StoreError;
    use sms_core::testing::MemorySpendLedger;

    use super::*;

    fn shop() -> Option<ClientId> {
        Some(ClientId::new("shop").unwrap())
    }

    fn capped(cap: &str) -> Spend {
        let client = Client {
            name: shop(),
            spend_cap: Some(cap.parse().unwrap()),
            ..Client::default()
        };
        Spend::new(
            [&client],
            None,
            0.8,
            FixedOffset::east_opt(8 * 3600).unwrap(),
        )
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, 4, 0, 0).unwrap()
    }

    fn money(text: &str) -> Money {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn a_cap_is_reached_by_this_instances_sends_and_by_what_others_wrote() {
        let ledger = Arc::new(MemorySpendLedger::new());
        let spend = capped("1.00");
        spend.attach(ledger.clone());
        spend.add(shop(), money("0.60"), now());
        assert!(spend.check(&shop(), now()).is_ok());
        // Another instance spent 0.40 for the shop this month.
        let period = BillingPeriod::containing(now(), FixedOffset::east_opt(8 * 3600).unwrap());
        ledger
            .add_spend(&period, &[(shop(), money("0.40"))])
            .await
            .unwrap();
        spend.sync(now()).await;
        let reached = spend.check(&shop(), now()).unwrap_err();
        assert_eq!((reached.spent, reached.cap), (money("1.00"), money("1.00")));
        assert_eq!(spend.warnings().get("shop"), Some(&1), "warned once at 80%");
        // Other clients are not held back by the shop's cap.
        assert!(spend.check(&None, now()).is_ok());
        // Next month starts again.
        assert!(
            spend
                .check(&shop(), now() + chrono::Duration::days(31))
                .is_ok()
        );
    }

    /// Writes but cannot read back.
    struct WriteOnly(MemorySpendLedger);

    #[async_trait]
    impl SpendLedger for WriteOnly {
        async fn add_spend(
            &self,
            period: &BillingPeriod,
            amounts: &[(Option<ClientId>, Money)],
        ) -> Result<(), StoreError> {
            self.0.add_spend(period, amounts).await
        }
        async fn spend(
            &self,
            _: &BillingPeriod,
        ) -> Result<BTreeMap<Option<ClientId>, Money>, StoreError> {
            Err(StoreError::unavailable("read refused"))
        }
    }

    #[tokio::test]
    async fn spend_written_but_not_read_back_stays_counted() {
        let spend = capped("1.00");
        spend.attach(Arc::new(WriteOnly(MemorySpendLedger::new())));
        spend.add(shop(), money("1.00"), now());
        spend.sync(now()).await;
        assert!(
            spend.check(&shop(), now()).is_err(),
            "the written spend still counts"
        );
    }

    #[tokio::test]
    async fn spend_is_counted_without_caps_so_a_cap_set_later_sees_it() {
        let ledger = Arc::new(MemorySpendLedger::new());
        let uncapped = Spend::new([], None, 0.8, FixedOffset::east_opt(8 * 3600).unwrap());
        uncapped.attach(ledger.clone());
        uncapped.add(shop(), money("2.00"), now());
        uncapped.sync(now()).await;
        let spend = capped("1.00");
        spend.attach(ledger);
        spend.sync(now()).await;
        assert!(spend.check(&shop(), now()).is_err());
    }

    /// Lets the first `fail` enqueues fail, then stores.
    struct Flaky {
        fail: std::sync::atomic::AtomicU32,
        outbox: sms_core::testing::MemoryOutbox,
    }

    #[async_trait]
    impl CallbackOutbox for Flaky {
        async fn enqueue(&self, events: &[sms_core::CallbackEvent]) -> Result<(), StoreError> {
            let left = self.fail.load(std::sync::atomic::Ordering::SeqCst);
            if left > 0 {
                self.fail
                    .store(left - 1, std::sync::atomic::Ordering::SeqCst);
                return Err(StoreError::unavailable("outbox down"));
            }
            self.outbox.enqueue(events).await
        }
        async fn claim(
            &self,
            owner: &str,
            now: DateTime<Utc>,
            lease: Duration,
            limit: u32,
        ) -> Result<Vec<sms_core::ClaimedCallback>, StoreError> {
            self.outbox.claim(owner, now, lease, limit).await
        }
        async fn settle(
            &self,
            id: uuid::Uuid,
            token: sms_core::LeaseToken,
            outcome: sms_core::CallbackOutcome,
            now: DateTime<Utc>,
        ) -> Result<bool, StoreError> {
            self.outbox.settle(id, token, outcome, now).await
        }
        async fn counts(&self) -> Result<sms_core::CallbackCounts, StoreError> {
            self.outbox.counts().await
        }
        async fn purge(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
            self.outbox.purge(before, limit).await
        }
    }

    /// Two instances each see the shop pass 80% of its cap; the outbox, down at the
    /// first try, gets the warning at the next sync, and holds one event between the
    /// two instances, addressed to the default URL and saying whose cap and how much.
    #[tokio::test]
    async fn a_warning_is_one_callback_event_across_instances_and_outages() {
        let ledger = Arc::new(MemorySpendLedger::new());
        let outbox = Arc::new(Flaky {
            fail: 1.into(),
            outbox: sms_core::testing::MemoryOutbox::new(),
        });
        let url = CallbackUrl::new("https://ops.example/sms-events").unwrap();
        let instances = [capped("1.00"), capped("1.00")];
        for spend in &instances {
            spend.attach(ledger.clone());
            spend.tell_warnings(outbox.clone(), url.clone());
        }
        instances[0].add(shop(), money("0.79"), now());
        instances[0].sync(now()).await;
        assert_eq!(outbox.counts().await.unwrap().pending, 0, "not yet at 80%");
        instances[0].add(shop(), money("0.02"), now());
        instances[0].sync(now()).await;
        assert_eq!(
            outbox.counts().await.unwrap().pending,
            0,
            "the outbox was down"
        );
        instances[0].sync(now()).await;
        assert_eq!(
            outbox.counts().await.unwrap().pending,
            1,
            "stored at the next try"
        );
        // The other instance reads the spend back and warns too: the same event.
        instances[1].sync(now()).await;
        assert_eq!(instances[1].warnings().get("shop"), Some(&1));
        let claimed = outbox
            .claim("a", now(), Duration::from_secs(30), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "one event for the cap this month");
        let event = &claimed[0].event;
        assert_eq!((&event.url, event.message_id), (&url, None));
        let body: SpendWarning = serde_json::from_str(&event.body).unwrap();
        assert_eq!(
            (body.scope.as_str(), body.spent.as_str(), body.cap.as_str()),
            ("shop", "0.81", "1.00")
        );
        assert_eq!(body.period, "2026-12");
    }

    /// Under its cap a client's stored message may go; at it, the message waits ten
    /// minutes, or until the billing month turns when that comes first, and is told why.
    #[test]
    fn a_reached_cap_holds_stored_messages_until_the_next_look_or_month() {
        let spend = capped("1.00");
        assert_eq!(spend.hold(shop(), now()), None);
        spend.add(shop(), money("1.00"), now());
        let hold = spend.hold(shop(), now()).expect("held at the cap");
        assert_eq!(hold.until, now() + HOLD_RECHECK);
        assert!(
            hold.why.contains("shop") && hold.why.contains("1.00"),
            "{}",
            hold.why
        );
        assert_eq!(spend.hold(None, now()), None, "other clients go");
        // 23:55 on the last day of the month in UTC+8: the new month comes first.
        let late = Utc.with_ymd_and_hms(2026, 12, 31, 15, 55, 0).unwrap();
        spend.add(shop(), money("1.00"), late);
        let hold = spend.hold(shop(), late).expect("held at the cap");
        assert_eq!(
            hold.until,
            Utc.with_ymd_and_hms(2026, 12, 31, 16, 0, 0).unwrap()
        );
    }
}
