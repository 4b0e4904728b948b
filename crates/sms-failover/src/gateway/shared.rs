//! One vendor health for every instance of a deployment, through a [`SharedBoard`].
//!
//! Each instance keeps its [`Health`](crate::health::Health) as a mirror of the board's
//! document and decides its sends from the mirror, without a round trip. A change (a
//! failure counted, a switch, a rest, an operator's switch-off) is made on the board
//! first, by compare-and-set: the instance applies the change to the document it last
//! read and writes it only if nobody wrote since; if somebody did, it takes their
//! document and applies its change again. So the N-th failure anywhere switches once
//! for everyone, and a failure of an attempt begun before a switch on another instance
//! is not charged (its epoch is stale on the new document). One change at a time
//! leaves an instance, so a change is never applied twice.
//!
//! A fast success that changes nothing (no failure counted) costs nothing: it is
//! applied to a copy first, and only changes go to the board. A fast success after
//! failures does, to reset the count for everyone.
//!
//! Every [`BOARD_POLL`], and whenever the board announces a write, each instance reads
//! the board and adopts a newer document: a switch another instance made is followed
//! (and announced) within milliseconds, at most a poll later. Rests are in the board's
//! clock, shifted by each instance's measured offset from it.
//!
//! Probes are claimed on the board, one per vendor across the deployment at a time.
//!
//! When the board cannot be reached, the instance says so once and goes on with the
//! mirror as its own health, as a lone instance does. When the board answers again, it
//! rejoins: it takes the board's document, puts the vendors it rested meanwhile to rest
//! there too, replays what operators changed through it, and writes that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sms_core::sync::lock;
use sms_core::{BoardRead, BoardWrite, SharedBoard, VendorId};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::Gateway;
use crate::health::{HealthDoc, HealthOp, Notice, Switch, SwitchDoc, Ticket};

/// How often each instance reads the board, besides when a write is announced.
pub const BOARD_POLL: Duration = Duration::from_millis(250);
/// How often each instance reports what it believes, and reads the billed totals.
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// How long a report stays on the board without a newer one.
const REPORT_TTL: Duration = Duration::from_secs(5);
/// A measured offset from the board's clock replaces the one in use only when it
/// differs by more than this: rests do not move with every read's jitter.
const CLOCK_STEP: TimeDelta = TimeDelta::milliseconds(100);
/// A change that keeps losing the race is dropped after this many tries in a row,
/// with a warning (a failure's change is made again by the next failure, if it still
/// matters).
const WRITE_TRIES: u32 = 32;

/// How this instance stands with the board.
#[derive(Debug)]
struct Link {
    /// The version of the document the mirror holds.
    version: u64,
    /// That document: a version number alone could come round again after the board
    /// lost what it held (a Redis restart).
    text: Option<String>,
    /// The board's clock minus this instance's; `None` before the first read.
    to_board: Option<TimeDelta>,
    standing: Standing,
    /// Operators' changes made while apart, replayed on rejoining.
    replay: Vec<HealthOp>,
    /// The last switch, as the document names it.
    last_switch: Option<SwitchDoc>,
}

/// Whether this instance shares the board's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Not read yet: nothing is written on a guess.
    Starting,
    Joined,
    /// The board has not answered since then; this instance decides alone meanwhile.
    Apart {
        since: DateTime<Utc>,
    },
}

/// The board a gateway shares its vendor health on.
pub(crate) struct Shared {
    board: Arc<dyn SharedBoard>,
    /// This instance's name on the board.
    instance: String,
    /// One change to the board at a time from this instance.
    one_change: tokio::sync::Mutex<()>,
    link: Mutex<Link>,
    /// Receipts that reached this instance since its last tally on the board, by vendor:
    /// (delivered, total).
    receipts: Mutex<std::collections::HashMap<usize, (u32, u32)>>,
    /// Numbers this instance's probe claims.
    next_claim: AtomicU64,
}

/// What an instance believes, as it reports it on the board.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct InstanceBelief {
    /// The instance.
    pub instance: String,
    /// Whether it shares the board's health now (false: it decides alone).
    pub shared: bool,
    /// The version of the board's document it holds.
    pub board_version: u64,
    /// The vendor it sends to.
    pub current: VendorId,
    /// Its epoch: a change of current vendor bumps it.
    pub epoch: u64,
    /// Per vendor, in its configured order.
    pub vendors: Vec<VendorBelief>,
    /// When it said so, by its clock.
    pub at: DateTime<Utc>,
}

/// One vendor as an instance sees it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct VendorBelief {
    /// The vendor.
    pub id: VendorId,
    /// Failures in a row charged to it.
    pub consecutive_failures: u32,
    /// End of its rest, while it rests.
    pub cooling_down_until: Option<DateTime<Utc>>,
    /// Switched off by an operator.
    pub disabled: bool,
    /// Messages billed this period, as this instance knows.
    pub billed_this_period: u64,
    /// The price of its next message, as this instance prices it.
    pub price: sms_core::Money,
}

/// The deployment's shared health, for status pages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deployment {
    /// This instance.
    pub instance: String,
    /// Whether this instance shares the board's health now.
    pub shared: bool,
    /// The board's document, as read now (none when the board cannot be read).
    pub board: Option<serde_json::Value>,
    /// The document's version.
    pub board_version: Option<u64>,
    /// What each instance reported last (this one first when the board is away).
    pub instances: Vec<InstanceBelief>,
}

/// The running board task. Dropping it leaves the task running; call [`Self::shutdown`].
pub struct SharingHandle {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl SharingHandle {
    /// Stops reading and reporting, and waits for the task to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "board task ended abnormally");
        }
    }
}

impl Shared {
    pub fn new(board: Arc<dyn SharedBoard>, instance: String) -> Self {
        Self {
            board,
            instance,
            one_change: tokio::sync::Mutex::new(()),
            link: Mutex::new(Link {
                version: 0,
                text: None,
                to_board: None,
                standing: Standing::Starting,
                replay: Vec::new(),
                last_switch: None,
            }),
            receipts: Mutex::default(),
            next_claim: AtomicU64::new(0),
        }
    }

    /// The holder of claim number `claim` of this instance.
    fn holder(&self, claim: u64) -> String {
        format!("{}#{claim}", self.instance)
    }

    /// Counts a receipt of vendor `idx` for the next tally.
    pub fn tally(&self, idx: usize, delivered: bool) {
        let mut receipts = lock(&self.receipts);
        let (d, t) = receipts.entry(idx).or_default();
        *d += u32::from(delivered);
        *t += 1;
    }

    /// Whether this instance shares the board's health now.
    pub fn joined(&self) -> bool {
        lock(&self.link).standing == Standing::Joined
    }

    /// Notes that the board did not answer; says so once.
    fn part(&self, now: DateTime<Utc>, error: &dyn std::fmt::Display) {
        let mut link = lock(&self.link);
        let was = link.standing;
        if !matches!(was, Standing::Apart { .. }) {
            link.standing = Standing::Apart { since: now };
        }
        if !matches!(was, Standing::Apart { .. }) {
            tracing::error!(%error, instance = %self.instance, "the shared board is unreachable: this instance decides vendor health alone until it answers again");
        }
    }

    /// Notes that this instance shares the board's health again; says so after an
    /// outage.
    fn joined_now(&self, link: &mut Link, now: DateTime<Utc>) {
        let was = std::mem::replace(&mut link.standing, Standing::Joined);
        if let Standing::Apart { since } = was {
            let apart_for = (now - since).to_std().unwrap_or_default();
            tracing::warn!(?apart_for, instance = %self.instance, "the shared board answers again: vendor health is the deployment's again");
        }
    }

    /// The offset from the board's clock, measured by a read begun at `sent` and answered
    /// at `got` (both this instance's clock).
    fn measure(&self, read: &BoardRead, sent: DateTime<Utc>, got: DateTime<Utc>) {
        let midpoint = sent + (got - sent) / 2;
        let offset = read.now - midpoint;
        let mut link = lock(&self.link);
        match link.to_board {
            Some(current) if (offset - current).abs() <= CLOCK_STEP => {}
            _ => link.to_board = Some(offset),
        }
    }
}

impl Gateway {
    /// Applies `ops` to vendor health (this instance's, or the deployment's on a board),
    /// announces the switch and reports the notice they caused; returns whether they
    /// switched.
    pub(crate) async fn change_health(&self, ops: &[HealthOp]) -> bool {
        let (switch, notice) = match &self.shared {
            None => {
                let mut health = self.health();
                let switch = health.apply_all(ops, self.clock.now());
                (switch, health.take_notice())
            }
            Some(shared) => self.change_on_board(shared, ops).await,
        };
        let switched = self.announce(switch);
        self.report(notice);
        switched
    }

    async fn change_on_board(
        &self,
        shared: &Shared,
        ops: &[HealthOp],
    ) -> (Option<Switch>, Option<Notice>) {
        // An operator's change is always taken to the board: this copy may not have
        // seen the opposite change another instance just made.
        let operator = ops.iter().any(replayed);
        if !operator && !self.health().would_change(ops, self.clock.now()) {
            return (None, None);
        }
        let _one = shared.one_change.lock().await;
        if operator && shared.joined() {
            if let Ok(read) = shared.board.read().await {
                self.follow(shared, &read);
            }
        }
        for _ in 0..WRITE_TRIES {
            let now = self.clock.now();
            let (expected, text, switch, before) = {
                let mut health = self.health();
                if !health.would_change(ops, now) {
                    // The board's document already holds it (or makes it stale).
                    return (None, health.take_notice());
                }
                let before = health.shared_part();
                let switch = health.apply_all(ops, now);
                let mut link = lock(&shared.link);
                if link.standing != Standing::Joined {
                    link.replay
                        .extend(ops.iter().filter(|op| replayed(op)).cloned());
                    return (switch, health.take_notice());
                }
                if let Some(s) = &switch {
                    link.last_switch = Some(SwitchDoc {
                        from: self.ids[s.from].to_string(),
                        to: self.ids[s.to].to_string(),
                        reason: s.reason.clone(),
                        by: shared.instance.clone(),
                        at: now + link.to_board.unwrap_or_default(),
                    });
                }
                let doc = self.doc_to_write(&health, &link, switch.is_some());
                (link.version, encode(&doc), switch, before)
            };
            match shared.board.write(expected, &text).await {
                Ok(BoardWrite::Written { version }) => {
                    let mut link = lock(&shared.link);
                    link.version = version;
                    link.text = Some(text);
                    drop(link);
                    return (switch, self.health().take_notice());
                }
                Ok(BoardWrite::Conflict(read)) => {
                    // Someone wrote first. This copy holds the change unwritten: back to
                    // what it held before, then take theirs (announcing a switch they
                    // made) and apply the change again on it. A board with nothing this
                    // instance can read is written over by the next try.
                    self.health().restore(before);
                    if !self.follow(shared, &read) {
                        let mut link = lock(&shared.link);
                        link.version = read.version;
                        link.text = read.doc.clone();
                    }
                }
                Err(e) => {
                    shared.part(self.clock.now(), &e);
                    lock(&shared.link)
                        .replay
                        .extend(ops.iter().filter(|op| replayed(op)).cloned());
                    return (switch, self.health().take_notice());
                }
            }
        }
        tracing::warn!(
            instance = %shared.instance,
            "a vendor health change lost the race on the board {WRITE_TRIES} times in a row; it was dropped"
        );
        (None, self.health().take_notice())
    }

    /// The document to write from this copy: what it holds, the last switch, and what
    /// the board said of vendors this instance does not have.
    fn doc_to_write(
        &self,
        health: &crate::health::Health,
        link: &Link,
        switched: bool,
    ) -> HealthDoc {
        let mut doc = health.to_doc(&self.ids, link.to_board.unwrap_or_default());
        doc.last_switch = link.last_switch.clone();
        if let Some(previous) = link
            .text
            .as_deref()
            .and_then(|t| serde_json::from_str::<HealthDoc>(t).ok())
        {
            doc.keep_unknown(&previous, &self.ids, switched);
        }
        doc
    }

    /// Adopts the board's document and announces the switch that makes here; returns
    /// false when the board holds nothing this instance can read.
    fn follow(&self, shared: &Shared, read: &BoardRead) -> bool {
        match self.adopt(shared, read) {
            Some(followed) => {
                self.announce(followed);
                true
            }
            None => false,
        }
    }

    /// Takes the board's document into the mirror; returns the switch that makes here,
    /// to be announced as followed, or `None` when the board holds no document this
    /// instance can read (and nothing was taken).
    fn adopt(&self, shared: &Shared, read: &BoardRead) -> Option<Option<Switch>> {
        let text = read.doc.as_ref()?;
        let doc: HealthDoc = match serde_json::from_str(text) {
            Ok(doc) => doc,
            Err(error) => {
                tracing::warn!(%error, "the board's vendor health cannot be read; keeping this instance's");
                return None;
            }
        };
        let now = self.clock.now();
        let mut health = self.health();
        let mut link = lock(&shared.link);
        let before = health.current;
        health.adopt(&doc, &self.ids, link.to_board.unwrap_or_default(), now);
        link.version = read.version;
        link.text = Some(text.clone());
        link.last_switch = doc.last_switch.clone();
        let after = health.current;
        Some((after != before).then(|| Switch {
            from: before,
            to: after,
            reason: match &doc.last_switch {
                Some(s) if s.to == self.ids[after].as_str() => {
                    format!("{} (decided by {})", s.reason, s.by)
                }
                _ => "the deployment's current vendor".to_owned(),
            },
        }))
    }

    /// Reads the board and brings the mirror up to date: adopts a newer document, writes
    /// this instance's when the board has none, rejoins after being apart.
    async fn sync_with_board(&self, shared: &Shared) {
        let _one = shared.one_change.lock().await;
        let sent = self.clock.now();
        let read = match shared.board.read().await {
            Ok(read) => read,
            Err(e) => {
                shared.part(self.clock.now(), &e);
                return;
            }
        };
        shared.measure(&read, sent, self.clock.now());
        let (standing, newer) = {
            let link = lock(&shared.link);
            (
                link.standing,
                (read.version, &read.doc) != (link.version, &link.text),
            )
        };
        if standing != Standing::Joined || read.doc.is_none() {
            self.rejoin(shared, read, standing).await;
            return;
        }
        if newer {
            self.follow(shared, &read);
        }
    }

    /// Joins the board: its document (if any) with this instance's rests and operator
    /// changes made while apart, written back.
    async fn rejoin(&self, shared: &Shared, read: BoardRead, standing: Standing) {
        let now = self.clock.now();
        let (expected, text, switch, replay) = {
            let mut health = self.health();
            let resting = health.resting(now);
            let before = health.current;
            let replay = std::mem::take(&mut lock(&shared.link).replay);
            let mut ops = replay.clone();
            if read.doc.is_some() {
                drop(health);
                self.adopt(shared, &read);
                health = self.health();
                if matches!(standing, Standing::Apart { .. }) {
                    ops.extend(resting.into_iter().map(|idx| HealthOp::DemoteFor {
                        idx,
                        reason: "it failed while the shared board was unreachable".into(),
                    }));
                }
            }
            health.apply_all(&ops, now);
            let after = health.current;
            let switch = (after != before).then(|| Switch {
                from: before,
                to: after,
                reason: "rejoined the shared board".into(),
            });
            let mut link = lock(&shared.link);
            let doc = self.doc_to_write(&health, &link, false);
            let theirs: Option<HealthDoc> = read
                .doc
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok());
            if theirs.as_ref() == Some(&doc) {
                // Nothing to add to the board's document.
                drop(health);
                shared.joined_now(&mut link, now);
                drop(link);
                self.announce(switch);
                return;
            }
            (read.version, encode(&doc), switch, replay)
        };
        match shared.board.write(expected, &text).await {
            Ok(BoardWrite::Written { version }) => {
                let mut link = lock(&shared.link);
                link.version = version;
                link.text = Some(text);
                shared.joined_now(&mut link, now);
                drop(link);
                self.announce(switch);
            }
            // Somebody wrote meanwhile, or the board failed: the next read joins again,
            // with the operators' changes still to replay.
            Ok(BoardWrite::Conflict(_)) => restore_replay(shared, replay),
            Err(e) => {
                shared.part(self.clock.now(), &e);
                restore_replay(shared, replay);
            }
        }
    }

    /// Claims the probe `ticket` stands for on the board; when another probe of that
    /// vendor runs now, anywhere in the deployment, the attempt goes to the current
    /// vendor instead. Without a board, or apart from it, every probe goes ahead.
    pub(crate) async fn claim_probe(&self, mut ticket: Ticket) -> Ticket {
        if !ticket.probe {
            return ticket;
        }
        let Some(shared) = self.shared.as_ref().filter(|s| s.joined()) else {
            return ticket;
        };
        // Each probe claims under a holder of its own, so that two probes of one
        // instance never share a claim.
        let claim = shared.next_claim.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("probe:{}", self.ids[ticket.idx]);
        let ttl = self.config.attempt_timeout * 2;
        match shared.board.claim(&name, &shared.holder(claim), ttl).await {
            Ok(true) => {
                ticket.claim = claim;
                ticket
            }
            Ok(false) => self.health().instead_of_probe(),
            Err(e) => {
                shared.part(self.clock.now(), &e);
                ticket
            }
        }
    }

    /// Gives back the probe claim of `ticket`, once its answer is recorded.
    pub(crate) async fn release_probe(&self, ticket: Ticket) {
        let Some(shared) = self.shared.as_ref() else {
            return;
        };
        if ticket.claim != 0 {
            let name = format!("probe:{}", self.ids[ticket.idx]);
            let holder = shared.holder(ticket.claim);
            if let Err(e) = shared.board.release(&name, &holder).await {
                tracing::debug!(error = %e, "could not give the probe claim back; it expires");
            }
        }
    }

    /// What this instance believes now.
    pub fn belief(&self) -> Option<InstanceBelief> {
        let shared = self.shared.as_ref()?;
        let vendors = self.vendors();
        let (version, joined) = {
            let link = lock(&shared.link);
            (link.version, link.standing == Standing::Joined)
        };
        let health = self.health();
        Some(InstanceBelief {
            instance: shared.instance.clone(),
            shared: joined,
            board_version: version,
            current: self.ids[health.current].clone(),
            epoch: health.epoch,
            vendors: vendors
                .into_iter()
                .map(|v| VendorBelief {
                    id: v.id,
                    consecutive_failures: v.consecutive_failures,
                    cooling_down_until: v.cooling_down_until,
                    disabled: v.disabled,
                    billed_this_period: v.billed_this_period,
                    price: v.price,
                })
                .collect(),
            at: self.clock.now(),
        })
    }

    /// The deployment's shared health and every instance's belief; none without a board.
    pub async fn deployment(&self) -> Option<Deployment> {
        let shared = self.shared.as_ref()?;
        let mine = self.belief()?;
        let read = shared.board.read().await.ok();
        let mut instances: Vec<InstanceBelief> = match shared.board.reports().await {
            Ok(reports) => reports
                .iter()
                .filter_map(|(_, text)| serde_json::from_str(text).ok())
                .filter(|b: &InstanceBelief| b.instance != mine.instance)
                .collect(),
            Err(_) => Vec::new(),
        };
        instances.sort_by(|a, b| a.instance.cmp(&b.instance));
        instances.insert(0, mine.clone());
        Some(Deployment {
            instance: mine.instance,
            shared: mine.shared,
            board_version: read.as_ref().map(|r| r.version),
            board: read
                .and_then(|r| r.doc)
                .and_then(|text| serde_json::from_str(&text).ok()),
            instances,
        })
    }

    /// Starts the task that keeps this instance in step with the board: reads it every
    /// [`BOARD_POLL`] and on every announced write, reports this instance's belief and
    /// reads the deployment's billed totals (so all instances price alike) every half
    /// second. `None` without a board.
    pub fn start_sharing(self: &Arc<Self>) -> Option<SharingHandle> {
        self.shared.as_ref()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(Arc::clone(self).run_sharing(stop.clone()));
        Some(SharingHandle { stop, task })
    }

    async fn run_sharing(self: Arc<Self>, stop: CancellationToken) {
        let Some(shared) = self.shared.as_ref() else {
            return;
        };
        let mut poll = tokio::time::interval(BOARD_POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_report = Instant::now();
        while !stop.is_cancelled() {
            self.sync_with_board(shared).await;
            if Instant::now() >= next_report {
                next_report = Instant::now() + REPORT_EVERY;
                self.tally_receipts(shared).await;
                if let Err(e) = self.refresh_totals().await {
                    tracing::debug!(error = %e, "could not read the billed totals");
                }
                if let Some(belief) = self.belief() {
                    let text = encode(&belief);
                    if let Err(e) = shared
                        .board
                        .report(&shared.instance, &text, REPORT_TTL)
                        .await
                    {
                        shared.part(self.clock.now(), &e);
                    }
                }
            }
            tokio::select! {
                _ = poll.tick() => {}
                () = shared.board.changed() => {}
                () = stop.cancelled() => {}
            }
        }
        // Receipts taken since the last tally are the deployment's too.
        self.tally_receipts(shared).await;
    }
}

impl Gateway {
    /// Adds the receipts counted since the last tally to the deployment's, vendor by
    /// vendor; a vendor whose tally fills a window with too few delivered is demoted.
    async fn tally_receipts(&self, shared: &Shared) {
        let tallies = std::mem::take(&mut *lock(&shared.receipts));
        for (idx, (delivered, total)) in tallies {
            let rested_before = self.health().vendors[idx].cooling_until;
            self.change_health(&[HealthOp::Receipts {
                idx,
                delivered,
                total,
            }])
            .await;
            let rests_now = self.health().vendors[idx].cooling_until;
            if rests_now != rested_before {
                tracing::warn!(vendor = %self.ids[idx], "vendor demoted on the deployment's delivery receipts");
            }
        }
    }
}

/// Puts `replay` back before what was added since it was taken.
fn restore_replay(shared: &Shared, mut replay: Vec<HealthOp>) {
    let mut link = lock(&shared.link);
    replay.append(&mut link.replay);
    link.replay = replay;
}

/// Whether `op` is an operator's change, replayed on rejoining the board.
fn replayed(op: &HealthOp) -> bool {
    matches!(
        op,
        HealthOp::Disable { .. } | HealthOp::Enable { .. } | HealthOp::MarkBroken { .. }
    )
}

fn encode<T: Serialize>(value: &T) -> String {
    // Plain structs of strings, numbers and times: serialising them cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}
