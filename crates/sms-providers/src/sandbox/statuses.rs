//! What the sandbox remembers of each accepted send, for the vendors' pull APIs: Tencent's
//! `PullSmsSendStatus` queue and Aliyun's `QuerySendDetails` records.
//!
//! Each accepted recipient's fate, delivered or not, is drawn once when the send is
//! accepted, at `[receipts] delivery_rate`; the same fate is pushed (when the route
//! pushes receipts) and pulled, as a real vendor reports one status both ways. A status
//! is due `[receipts] delay_ms` after the send: Tencent's queue hands it out only then,
//! and Aliyun answers "waiting for the receipt" until then.
//!
//! Memory is bounded: each route keeps at most [`MAX_KEPT`] sends and drops the oldest
//! beyond that (a real vendor keeps a month's worth). Tencent's queue also forgets a
//! status once it is handed out.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use rand::Rng as _;
use sms_core::sync::lock;

use super::{Delivery, SandboxState};

/// Most sends each route remembers for its pull API.
pub(crate) const MAX_KEPT: usize = 100_000;

/// One accepted recipient, its drawn fate and when the vendor has it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SendStatus {
    /// The send as recorded.
    pub(crate) delivery: Delivery,
    /// Whether the handset got it.
    pub(crate) delivered: bool,
    /// When the receipt is in: `delay_ms` after the send.
    pub(crate) due_at: DateTime<Utc>,
}

impl SendStatus {
    /// Whether the receipt is in at `now`.
    pub(crate) fn is_due(&self, now: DateTime<Utc>) -> bool {
        now >= self.due_at
    }
}

/// The statuses each pull API answers from.
#[derive(Debug)]
pub(crate) struct SendStatuses {
    /// Most statuses each route keeps.
    cap: usize,
    /// Tencent's queue, in the order the sends were accepted, so in the order they fall
    /// due. The route accepts one `SmsSdkAppId`, so this is that application's queue.
    tencent: Mutex<VecDeque<SendStatus>>,
    /// Aliyun's records.
    aliyun: Mutex<AliyunRecords>,
}

/// Aliyun's records by recipient (E.164), each number's oldest first, and the numbers in
/// the order their records came, so that the oldest record overall can be dropped.
#[derive(Debug, Default)]
struct AliyunRecords {
    by_number: HashMap<String, VecDeque<SendStatus>>,
    order: VecDeque<String>,
}

/// The date of `at` in Beijing, which Aliyun's `SendDate` names.
pub(crate) fn beijing_date(at: DateTime<Utc>) -> NaiveDate {
    let beijing = FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
    at.with_timezone(&beijing).date_naive()
}

impl SendStatuses {
    /// Keeping at most `cap` statuses per route.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            tencent: Mutex::new(VecDeque::new()),
            aliyun: Mutex::new(AliyunRecords::default()),
        }
    }

    /// Remembers accepted recipients of the routes that answer pulls (Aliyun and
    /// Tencent; Cloopen's are not kept), dropping the oldest beyond the cap.
    pub(crate) fn keep(&self, statuses: impl IntoIterator<Item = SendStatus>) {
        for status in statuses {
            match status.delivery.vendor.as_str() {
                "tencent" => {
                    let mut queue = lock(&self.tencent);
                    queue.push_back(status);
                    if queue.len() > self.cap {
                        queue.pop_front();
                    }
                }
                "aliyun" => {
                    let mut records = lock(&self.aliyun);
                    let number = status.delivery.recipient.clone();
                    records.order.push_back(number.clone());
                    records
                        .by_number
                        .entry(number)
                        .or_default()
                        .push_back(status);
                    if records.order.len() > self.cap {
                        records.drop_oldest();
                    }
                }
                _ => {}
            }
        }
    }

    /// Takes up to `limit` statuses off Tencent's queue that are due at `now`, oldest
    /// first: each is handed out once. One not yet due holds back those after it, which
    /// fall due no earlier.
    pub(crate) fn take_due_tencent(&self, now: DateTime<Utc>, limit: usize) -> Vec<SendStatus> {
        let mut queue = lock(&self.tencent);
        let due = queue
            .iter()
            .take(limit)
            .take_while(|s| s.is_due(now))
            .count();
        queue.drain(..due).collect()
    }

    /// Aliyun's records of sends to `number` (E.164) on `date` (Beijing), with the
    /// `BizId` when one is given, oldest first.
    pub(crate) fn aliyun_records(
        &self,
        number: &str,
        biz_id: Option<&str>,
        date: NaiveDate,
    ) -> Vec<SendStatus> {
        let records = lock(&self.aliyun);
        let Some(sent) = records.by_number.get(number) else {
            return Vec::new();
        };
        sent.iter()
            .filter(|s| biz_id.is_none_or(|id| s.delivery.vendor_message_id == id))
            .filter(|s| beijing_date(s.delivery.time) == date)
            .cloned()
            .collect()
    }
}

impl AliyunRecords {
    /// Drops the oldest record: the oldest of the number that came first.
    fn drop_oldest(&mut self) {
        let Some(number) = self.order.pop_front() else {
            return;
        };
        if let Some(sent) = self.by_number.get_mut(&number) {
            sent.pop_front();
            if sent.is_empty() {
                self.by_number.remove(&number);
            }
        }
    }
}

impl SandboxState {
    /// Draws each of `deliveries`' fate at the configured delivery rate: whether the
    /// handset got it. From a generator of its own, so that pulls and pushes leave the
    /// fault draws as they were.
    pub(super) fn draw_fates(&self, deliveries: &[Delivery]) -> Vec<bool> {
        let rate = self.config.receipts.delivery_rate;
        let mut rng = lock(&self.fate_rng);
        deliveries
            .iter()
            .map(|_| rng.random::<f64>() < rate)
            .collect()
    }

    /// Remembers `deliveries` with their `fates` for the pull APIs, due after the
    /// configured delay.
    pub(super) fn keep_statuses(&self, deliveries: &[Delivery], fates: &[bool]) {
        let delay = Duration::from_millis(self.config.receipts.delay_ms);
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        self.statuses.keep(
            deliveries
                .iter()
                .zip(fates)
                .map(|(d, &delivered)| SendStatus {
                    delivery: d.clone(),
                    delivered,
                    due_at: d.time + delay,
                }),
        );
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn status(vendor: &str, number: &str, id: &str, at: DateTime<Utc>) -> SendStatus {
        SendStatus {
            delivery: Delivery {
                vendor: vendor.into(),
                recipient: number.into(),
                vendor_message_id: id.into(),
                reference: None,
                template: "SMS_1".into(),
                sign_name: None,
                args: Vec::new(),
                time: at,
            },
            delivered: true,
            due_at: at + chrono::Duration::seconds(1),
        }
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 1, 8, 0, 0).unwrap()
    }

    #[test]
    fn tencents_queue_hands_out_each_due_status_once_in_order() {
        let statuses = SendStatuses::new(10);
        statuses.keep((0..3).map(|i| {
            status(
                "tencent",
                "+8613800138000",
                &format!("s{i}"),
                t0() + chrono::Duration::seconds(i),
            )
        }));
        assert!(
            statuses.take_due_tencent(t0(), 10).is_empty(),
            "none due yet"
        );
        let ids = |taken: Vec<SendStatus>| -> Vec<String> {
            taken
                .into_iter()
                .map(|s| s.delivery.vendor_message_id)
                .collect()
        };
        let at = t0() + chrono::Duration::seconds(2);
        assert_eq!(
            ids(statuses.take_due_tencent(at, 1)),
            ["s0"],
            "the limit holds"
        );
        assert_eq!(ids(statuses.take_due_tencent(at, 10)), ["s1"]);
        let later = t0() + chrono::Duration::seconds(10);
        assert_eq!(ids(statuses.take_due_tencent(later, 10)), ["s2"]);
        assert!(statuses.take_due_tencent(later, 10).is_empty(), "each once");
    }

    #[test]
    fn aliyun_answers_by_number_biz_id_and_beijing_date() {
        let statuses = SendStatuses::new(10);
        // 15:59 UTC is 23:59 in Beijing; 16:01 UTC is the next day there.
        let late = Utc.with_ymd_and_hms(2024, 3, 1, 15, 59, 0).unwrap();
        let next_day = Utc.with_ymd_and_hms(2024, 3, 1, 16, 1, 0).unwrap();
        statuses.keep([
            status("aliyun", "+8613800138000", "1^0", late),
            status("aliyun", "+8613800138000", "2^0", next_day),
            status("aliyun", "+8613800138001", "2^0", next_day),
            status("tencent", "+8613800138000", "1^0", late),
        ]);
        let march = |d| NaiveDate::from_ymd_opt(2024, 3, d).unwrap();
        let found = statuses.aliyun_records("+8613800138000", Some("1^0"), march(1));
        assert_eq!(found.len(), 1);
        assert!(
            statuses
                .aliyun_records("+8613800138000", Some("1^0"), march(2))
                .is_empty()
        );
        assert_eq!(
            statuses
                .aliyun_records("+8613800138000", None, march(2))
                .len(),
            1
        );
        assert!(
            statuses
                .aliyun_records("+8613800138009", None, march(1))
                .is_empty()
        );
    }

    #[test]
    fn each_route_keeps_at_most_its_cap_dropping_the_oldest() {
        let statuses = SendStatuses::new(3);
        let march_1 = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        for i in 0..5 {
            let number = format!("+861380013800{}", i % 2);
            statuses.keep([
                status("aliyun", &number, &format!("{i}^0"), t0()),
                status("tencent", &number, &format!("s{i}"), t0()),
            ]);
        }
        let kept: Vec<String> = ["+8613800138000", "+8613800138001"]
            .iter()
            .flat_map(|n| statuses.aliyun_records(n, None, march_1))
            .map(|s| s.delivery.vendor_message_id)
            .collect();
        assert_eq!(kept, ["2^0", "4^0", "3^0"]);
        let later = t0() + chrono::Duration::seconds(5);
        let queued: Vec<String> = statuses
            .take_due_tencent(later, 100)
            .into_iter()
            .map(|s| s.delivery.vendor_message_id)
            .collect();
        assert_eq!(queued, ["s2", "s3", "s4"]);
    }
}
