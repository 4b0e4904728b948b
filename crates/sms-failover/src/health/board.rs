//! Health as a shared document: what of [`Health`] the instances of a deployment share
//! on a [`SharedBoard`](sms_core::SharedBoard), and the changes they make to it.
//!
//! Shared: who is current and the epoch, each vendor's failures in a row, rest,
//! demotion history, probe successes and manual switch-off, when every vendor became
//! unavailable, and the templates each vendor refused. Not shared: billed usage (each
//! instance reads it from the ledger), the attempt counter that picks probes, and the
//! notices not yet reported.
//!
//! Vendors are named by id in the document, so instances that list them in another
//! order, or a vendor more or fewer, still share what they have in common. Times are
//! the board's clock: an instance shifts them by how far its own clock is from the
//! board's, so rests end at the same moment everywhere.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sms_core::VendorId;

use super::{Health, Route, Switch, Ticket, VendorState, Verdict};

/// A change to health, as an instance makes it: replayed on a fresher document when
/// another instance wrote first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HealthOp {
    /// What an attempt said about its vendor.
    Record { ticket: Ticket, verdict: Verdict },
    /// The vendor refused the template.
    MarkBroken { template: String, idx: usize },
    /// Rest the vendor for another reason than its calls (its receipts).
    DemoteFor { idx: usize, reason: String },
    /// An operator switched the vendor off.
    Disable { idx: usize },
    /// An operator switched the vendor on.
    Enable { idx: usize },
    /// A rest ended while every vendor rested.
    Wake,
    /// An instance's tally of a vendor's receipts: `total` receipts, `delivered` of
    /// them delivered. Once the deployment's tally holds a window of receipts, the
    /// vendor is demoted if too few were delivered, and the tally starts over.
    Receipts {
        idx: usize,
        delivered: u32,
        total: u32,
    },
}

/// The shared part of [`Health`], to compare before and after a change.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SharedPart {
    vendors: Vec<VendorState>,
    current: usize,
    epoch: u64,
    unavailable_since: Option<(DateTime<Utc>, u64)>,
    broken: std::collections::HashMap<String, u64>,
}

/// One vendor in the document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct VendorDoc {
    pub consecutive_failures: u32,
    pub cooling_until: Option<DateTime<Utc>>,
    pub disabled: bool,
    pub demotion_streak: u32,
    pub rests: u64,
    pub last_demoted_at: Option<DateTime<Utc>>,
    pub probe_successes: u32,
    pub receipts_total: u32,
    pub receipts_delivered: u32,
}

/// The last change of current vendor, for the instances that follow it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SwitchDoc {
    pub from: String,
    pub to: String,
    pub reason: String,
    /// The instance that made it.
    pub by: String,
    pub at: DateTime<Utc>,
}

/// The document on the board.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct HealthDoc {
    pub current: String,
    pub epoch: u64,
    pub vendors: BTreeMap<String, VendorDoc>,
    /// Since when every vendor is unavailable, and from which epoch on.
    pub unavailable_since: Option<(DateTime<Utc>, u64)>,
    /// By template, the vendors that refused it.
    pub broken: BTreeMap<String, Vec<String>>,
    pub last_switch: Option<SwitchDoc>,
}

impl HealthDoc {
    /// Keeps what `previous` says of vendors this instance does not have (`ids`): their
    /// entries, their refused templates, and the current vendor unless this instance's
    /// change `switched`. Instances with different vendor lists (a rolling deploy) then
    /// never erase each other's vendors.
    pub fn keep_unknown(&mut self, previous: &HealthDoc, ids: &[VendorId], switched: bool) {
        let known = |name: &str| ids.iter().any(|id| id.as_str() == name);
        for (name, vendor) in &previous.vendors {
            if !known(name) {
                self.vendors.insert(name.clone(), vendor.clone());
            }
        }
        for (template, names) in &previous.broken {
            let unknown = names.iter().filter(|n| !known(n)).cloned();
            let entry = self.broken.entry(template.clone()).or_default();
            entry.extend(unknown);
        }
        self.broken.retain(|_, names| !names.is_empty());
        if !switched && !known(&previous.current) {
            self.current = previous.current.clone();
        }
    }
}

fn shift(t: Option<DateTime<Utc>>, by: TimeDelta) -> Option<DateTime<Utc>> {
    t.map(|t| t + by)
}

impl Health {
    /// Applies `op` at `now`; returns the switch it caused.
    pub fn apply(&mut self, op: &HealthOp, now: DateTime<Utc>) -> Option<Switch> {
        match op {
            HealthOp::Record { ticket, verdict } => self.record(*ticket, *verdict, now),
            HealthOp::MarkBroken { template, idx } => {
                self.mark_broken(template, *idx);
                None
            }
            HealthOp::DemoteFor { idx, reason } => self.demote_for(*idx, reason.clone(), now),
            HealthOp::Disable { idx } => self.disable(*idx, now),
            HealthOp::Enable { idx } => self.enable(*idx),
            HealthOp::Wake => self.wake(now),
            HealthOp::Receipts {
                idx,
                delivered,
                total,
            } => self.tally_receipts(*idx, *delivered, *total, now),
        }
    }

    fn tally_receipts(
        &mut self,
        idx: usize,
        delivered: u32,
        total: u32,
        now: DateTime<Utc>,
    ) -> Option<Switch> {
        if self.receipt_window == 0 {
            return None;
        }
        let v = &mut self.vendors[idx];
        v.receipts_total = v.receipts_total.saturating_add(total);
        v.receipts_delivered = v.receipts_delivered.saturating_add(delivered);
        if v.receipts_total < self.receipt_window {
            return None;
        }
        let (total, delivered) = (v.receipts_total, v.receipts_delivered);
        v.receipts_total = 0;
        v.receipts_delivered = 0;
        let rate = f64::from(delivered) / f64::from(total);
        if rate >= self.min_delivery_rate {
            return None;
        }
        let reason = format!(
            "delivery rate {:.1}% over the deployment's last {total} receipts, under {:.1}%",
            100.0 * rate,
            100.0 * self.min_delivery_rate
        );
        self.demote_for(idx, reason, now)
    }

    /// Applies `ops` in order; returns the last switch they caused.
    pub fn apply_all(&mut self, ops: &[HealthOp], now: DateTime<Utc>) -> Option<Switch> {
        ops.iter()
            .fold(None, |last, op| self.apply(op, now).or(last))
    }

    /// The shared part as it is now.
    pub fn shared_part(&self) -> SharedPart {
        SharedPart {
            vendors: self.vendors.clone(),
            current: self.current,
            epoch: self.epoch,
            unavailable_since: self.unavailable_since,
            broken: self.broken.clone(),
        }
    }

    /// Whether `ops` would change the shared part at `now`; changes nothing.
    pub fn would_change(&mut self, ops: &[HealthOp], now: DateTime<Utc>) -> bool {
        let before = self.shared_part();
        let notice = self.notice.take();
        self.apply_all(ops, now);
        let changed = self.shared_part() != before;
        self.restore(before);
        self.notice = notice;
        changed
    }

    /// Puts back the shared part `part` (taken by [`Self::shared_part`]).
    pub fn restore(&mut self, part: SharedPart) {
        self.vendors = part.vendors;
        self.current = part.current;
        self.epoch = part.epoch;
        self.unavailable_since = part.unavailable_since;
        self.broken = part.broken;
    }

    /// The shared part as a document, its times moved by `to_board` (the board's clock
    /// minus this instance's).
    pub fn to_doc(&self, ids: &[VendorId], to_board: TimeDelta) -> HealthDoc {
        let name = |idx: usize| ids[idx].as_str().to_owned();
        let vendors = self
            .vendors
            .iter()
            .enumerate()
            .map(|(idx, v)| {
                let doc = VendorDoc {
                    consecutive_failures: v.consecutive_failures,
                    cooling_until: shift(v.cooling_until, to_board),
                    disabled: v.disabled,
                    demotion_streak: v.demotion_streak,
                    rests: v.rests,
                    last_demoted_at: shift(v.last_demoted_at, to_board),
                    probe_successes: v.probe_successes,
                    receipts_total: v.receipts_total,
                    receipts_delivered: v.receipts_delivered,
                };
                (name(idx), doc)
            })
            .collect();
        let broken = self
            .broken
            .iter()
            .map(|(template, mask)| {
                let names = (0..ids.len())
                    .filter(|i| mask & (1 << i) != 0)
                    .map(name)
                    .collect();
                (template.clone(), names)
            })
            .collect();
        HealthDoc {
            current: name(self.current),
            epoch: self.epoch,
            vendors,
            unavailable_since: self
                .unavailable_since
                .map(|(since, epoch)| (since + to_board, epoch)),
            broken,
            last_switch: None,
        }
    }

    /// Takes the shared part from `doc`, its times moved back by `to_board`. A vendor
    /// the document does not name is healthy; a current vendor this instance does not
    /// have leaves the cheapest usable one current.
    pub fn adopt(
        &mut self,
        doc: &HealthDoc,
        ids: &[VendorId],
        to_board: TimeDelta,
        now: DateTime<Utc>,
    ) {
        let back = -to_board;
        for (idx, id) in ids.iter().enumerate() {
            let d = doc.vendors.get(id.as_str()).cloned().unwrap_or_default();
            self.vendors[idx] = VendorState {
                consecutive_failures: d.consecutive_failures,
                cooling_until: shift(d.cooling_until, back),
                disabled: d.disabled,
                demotion_streak: d.demotion_streak,
                rests: d.rests,
                last_demoted_at: shift(d.last_demoted_at, back),
                probe_successes: d.probe_successes,
                receipts_total: d.receipts_total,
                receipts_delivered: d.receipts_delivered,
            };
        }
        self.broken = doc
            .broken
            .iter()
            .map(|(template, names)| {
                let mask = names
                    .iter()
                    .filter_map(|n| ids.iter().position(|id| id.as_str() == n))
                    .fold(0u64, |mask, i| mask | 1 << i);
                (template.clone(), mask)
            })
            .filter(|(_, mask)| *mask != 0)
            .collect();
        self.epoch = doc.epoch;
        self.unavailable_since = doc
            .unavailable_since
            .map(|(since, epoch)| (since + back, epoch));
        self.current = match ids.iter().position(|id| id.as_str() == doc.current) {
            Some(idx) => idx,
            None => self
                .cheapest_usable(&Route::ANY, None, now)
                .unwrap_or(self.current),
        };
    }

    /// The vendors that rest at `now`, as this copy says (on rejoining, those this
    /// instance put to rest while apart are among them).
    pub fn resting(&self, now: DateTime<Utc>) -> Vec<usize> {
        (0..self.vendors.len())
            .filter(|&i| {
                self.vendors[i]
                    .cooling_until
                    .is_some_and(|until| until > now)
            })
            .collect()
    }

    /// The ticket to use when a probe could not be claimed: the current vendor's.
    pub fn instead_of_probe(&self) -> Ticket {
        self.ticket(self.current, false)
    }
}
