//! An in-memory delivery log.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::callback_url::CallbackUrl;
use crate::delivery::{
    DeliveryLog, DeliveryReport, DeliveryState, PendingDelivery, RecipientDelivery, ReportApplied,
    SentDelivery,
};
use crate::error::StoreError;
use crate::ids::{MessageId, VendorId};
use crate::phone::PhoneNumber;

/// What identifies one recipient's send at a vendor.
type Key = (VendorId, String, PhoneNumber);

/// A recorded send: its message, when, where its events go, segments billed.
type Sent = (MessageId, DateTime<Utc>, Option<CallbackUrl>, Option<u32>);

/// One row: a recorded send, a receipt, or both.
#[derive(Debug, Clone)]
struct Row {
    sent: Option<Sent>,
    receipt: Option<(DeliveryReport, DateTime<Utc>)>,
}

/// A delivery log in a map; atomic per call, lost on restart.
#[derive(Debug, Default)]
pub struct MemoryDeliveryLog {
    rows: Mutex<HashMap<Key, Row>>,
}

impl MemoryDeliveryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl DeliveryLog for MemoryDeliveryLog {
    async fn record_sent(
        &self,
        sent: &[SentDelivery],
    ) -> Result<Vec<(DeliveryReport, ReportApplied)>, StoreError> {
        let mut rows = crate::sync::lock(&self.rows);
        let mut settled = Vec::new();
        for s in sent {
            let key = (
                s.vendor.clone(),
                s.vendor_message_id.clone(),
                s.recipient.clone(),
            );
            let row = rows.entry(key).or_insert(Row {
                sent: None,
                receipt: None,
            });
            if row.sent.is_some() {
                continue;
            }
            row.sent = Some((
                s.message_id,
                s.sent_at,
                s.callback_url.clone(),
                s.billed_segments,
            ));
            if let Some((report, _)) = &row.receipt {
                settled.push((
                    report.clone(),
                    ReportApplied::Applied {
                        sent_at: s.sent_at,
                        message_id: s.message_id,
                        callback_url: s.callback_url.clone(),
                        billed_segments: s.billed_segments,
                    },
                ));
            }
        }
        Ok(settled)
    }

    async fn apply_reports(
        &self,
        reports: &[DeliveryReport],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReportApplied>, StoreError> {
        let mut rows = crate::sync::lock(&self.rows);
        Ok(reports
            .iter()
            .map(|report| {
                let key = (
                    report.vendor.clone(),
                    report.vendor_message_id.clone(),
                    report.recipient.clone(),
                );
                let row = rows.entry(key).or_insert(Row {
                    sent: None,
                    receipt: None,
                });
                if row.receipt.is_some() {
                    return ReportApplied::Duplicate;
                }
                row.receipt = Some((report.clone(), now));
                match &row.sent {
                    Some((message_id, sent_at, callback_url, billed_segments)) => {
                        ReportApplied::Applied {
                            sent_at: *sent_at,
                            message_id: *message_id,
                            callback_url: callback_url.clone(),
                            billed_segments: *billed_segments,
                        }
                    }
                    None => ReportApplied::Kept,
                }
            })
            .collect())
    }

    async fn deliveries(&self, id: MessageId) -> Result<Vec<RecipientDelivery>, StoreError> {
        let rows = crate::sync::lock(&self.rows);
        let mut found: Vec<RecipientDelivery> = rows
            .iter()
            .filter_map(|(key, row)| view(key, row).filter(|(message, _)| *message == id))
            .map(|(_, delivery)| delivery)
            .collect();
        found.sort_by(|a, b| {
            (a.sent_at, a.recipient.as_str()).cmp(&(b.sent_at, b.recipient.as_str()))
        });
        Ok(found)
    }

    async fn sent_to(
        &self,
        recipient: &PhoneNumber,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(MessageId, RecipientDelivery)>, StoreError> {
        let rows = crate::sync::lock(&self.rows);
        let mut found: Vec<(MessageId, RecipientDelivery)> = rows
            .iter()
            .filter(|((_, _, number), _)| number == recipient)
            .filter_map(|(key, row)| view(key, row))
            .filter(|(_, d)| d.sent_at >= since)
            .collect();
        found.sort_by_key(|(_, d)| std::cmp::Reverse(d.sent_at));
        found.truncate(limit as usize);
        Ok(found)
    }

    async fn unsettled(
        &self,
        vendor: &VendorId,
        after: DateTime<Utc>,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let rows = crate::sync::lock(&self.rows);
        let mut found: Vec<PendingDelivery> = rows
            .iter()
            .filter(|((v, _, _), row)| v == vendor && row.receipt.is_none())
            .filter_map(|((_, id, recipient), row)| {
                let (_, sent_at, _, _) = row.sent.as_ref()?;
                (*sent_at > after && *sent_at < before).then(|| PendingDelivery {
                    vendor_message_id: id.clone(),
                    recipient: recipient.clone(),
                    sent_at: *sent_at,
                })
            })
            .collect();
        found.sort_by(|a, b| {
            (a.sent_at, &a.vendor_message_id, a.recipient.as_str()).cmp(&(
                b.sent_at,
                &b.vendor_message_id,
                b.recipient.as_str(),
            ))
        });
        found.truncate(limit as usize);
        Ok(found)
    }

    async fn purge(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let mut rows = crate::sync::lock(&self.rows);
        let old: Vec<Key> = rows
            .iter()
            .filter(|(_, row)| match (&row.sent, &row.receipt) {
                (Some((_, sent_at, _, _)), _) => *sent_at < before,
                (None, Some((_, received))) => *received < before,
                (None, None) => true,
            })
            .map(|(key, _)| key.clone())
            .take(limit as usize)
            .collect();
        for key in &old {
            rows.remove(key);
        }
        Ok(old.len() as u64)
    }
}

/// A recorded send's row as the log shows it, with its message.
fn view(
    (vendor, vendor_message_id, recipient): &Key,
    row: &Row,
) -> Option<(MessageId, RecipientDelivery)> {
    let (message_id, sent_at, _, _) = row.sent.clone()?;
    let receipt = row.receipt.as_ref();
    let report = receipt.map(|(r, _)| r);
    Some((
        message_id,
        RecipientDelivery {
            recipient: recipient.clone(),
            vendor: vendor.clone(),
            vendor_message_id: vendor_message_id.clone(),
            state: report.map_or(DeliveryState::Sent, DeliveryReport::state),
            code: report.and_then(|r| r.code.clone()),
            description: report.and_then(|r| r.description.clone()),
            sent_at,
            reported_at: report.and_then(|r| r.reported_at),
            receipt_at: receipt.map(|(_, at)| *at),
            segments: report.and_then(|r| r.segments),
        },
    ))
}
