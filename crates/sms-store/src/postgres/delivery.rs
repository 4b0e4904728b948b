//! The delivery log in Postgres: [`DeliveryLog`] for [`PgStore`]. Sends are recorded in
//! one statement per batch; receipts are upserts that only a row no receipt has settled
//! accepts, so copies of a receipt applied by several instances at once settle a send
//! once.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sms_core::{
    CallbackUrl, DeliveryLog, DeliveryReport, MessageId, PendingDelivery, PhoneNumber,
    RecipientDelivery, ReportApplied, SentDelivery, StoreError, VendorId,
};

use super::PgStore;
use super::error::pg_error;
use super::statements::{
    DELIVERIES_OF, DELIVERIES_SENT, DELIVERIES_TO, DELIVERY_RECEIPT, PURGE_DELIVERIES_SENT,
    PURGE_DELIVERIES_UNMATCHED, UNSETTLED,
};
use crate::codec;

#[async_trait]
impl DeliveryLog for PgStore {
    async fn record_sent(
        &self,
        sent: &[SentDelivery],
    ) -> Result<Vec<(DeliveryReport, ReportApplied)>, StoreError> {
        // One statement may not touch a row twice: a repeated send goes once.
        let mut seen = HashSet::new();
        let sent: Vec<&SentDelivery> = sent
            .iter()
            .filter(|s| seen.insert((&s.vendor, &s.vendor_message_id, &s.recipient)))
            .collect();
        if sent.is_empty() {
            return Ok(Vec::new());
        }
        let vendors: Vec<&str> = sent.iter().map(|s| s.vendor.as_str()).collect();
        let ids: Vec<&str> = sent.iter().map(|s| s.vendor_message_id.as_str()).collect();
        let recipients: Vec<&str> = sent.iter().map(|s| s.recipient.as_str()).collect();
        let messages: Vec<uuid::Uuid> = sent.iter().map(|s| *s.message_id.as_uuid()).collect();
        let times: Vec<DateTime<Utc>> = sent.iter().map(|s| s.sent_at).collect();
        let callback_urls: Vec<Option<&str>> = sent
            .iter()
            .map(|s| s.callback_url.as_ref().map(CallbackUrl::as_str))
            .collect();
        let billed_segments: Vec<Option<i32>> = sent
            .iter()
            .map(|s| {
                s.billed_segments
                    .map(|n| i32::try_from(n).unwrap_or(i32::MAX))
            })
            .collect();
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(DELIVERIES_SENT)
                .await
                .map_err(pg_error)?;
            let written = client
                .query(
                    &stmt,
                    &[
                        &vendors,
                        &ids,
                        &recipients,
                        &messages,
                        &times,
                        &callback_urls,
                        &billed_segments,
                    ],
                )
                .await
                .map_err(pg_error)?;
            // Rows written with a receipt already on them were kept receipts.
            let mut settled = Vec::new();
            for row in &written {
                let receipt_at: Option<DateTime<Utc>> = row.try_get(8).map_err(pg_error)?;
                if receipt_at.is_none() {
                    continue;
                }
                let key: (&str, &str, &str) = (
                    row.try_get(0).map_err(pg_error)?,
                    row.try_get(1).map_err(pg_error)?,
                    row.try_get(2).map_err(pg_error)?,
                );
                let Some(send) = sent.iter().find(|s| {
                    (
                        s.vendor.as_str(),
                        s.vendor_message_id.as_str(),
                        s.recipient.as_str(),
                    ) == key
                }) else {
                    continue;
                };
                let state: &str = row.try_get(3).map_err(pg_error)?;
                let segments: Option<i32> = row.try_get(7).map_err(pg_error)?;
                settled.push(codec::kept_receipt_settled(
                    send,
                    state,
                    row.try_get(4).map_err(pg_error)?,
                    row.try_get(5).map_err(pg_error)?,
                    row.try_get(6).map_err(pg_error)?,
                    segments.and_then(|n| u32::try_from(n).ok()),
                )?);
            }
            Ok(settled)
        })
        .await
    }

    async fn apply_reports(
        &self,
        reports: &[DeliveryReport],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReportApplied>, StoreError> {
        self.timed(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let upsert = tx
                .prepare_cached(DELIVERY_RECEIPT)
                .await
                .map_err(pg_error)?;
            let mut applied = Vec::with_capacity(reports.len());
            for r in reports {
                let state = r.state();
                let segments = r.segments.map(|s| i32::try_from(s).unwrap_or(i32::MAX));
                let row = tx
                    .query_opt(
                        &upsert,
                        &[
                            &r.vendor.as_str(),
                            &r.vendor_message_id,
                            &r.recipient.as_str(),
                            &state.as_str(),
                            &r.code,
                            &r.description,
                            &r.reported_at,
                            &now,
                            &segments,
                        ],
                    )
                    .await
                    .map_err(pg_error)?;
                applied.push(match row {
                    None => ReportApplied::Duplicate,
                    Some(row) => settled(&row)?,
                });
            }
            tx.commit().await.map_err(pg_error)?;
            Ok(applied)
        })
        .await
    }

    async fn deliveries(&self, id: MessageId) -> Result<Vec<RecipientDelivery>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(DELIVERIES_OF)
                .await
                .map_err(pg_error)?;
            let rows = client
                .query(&stmt, &[id.as_uuid()])
                .await
                .map_err(pg_error)?;
            rows.iter().map(delivery).collect()
        })
        .await
    }

    async fn sent_to(
        &self,
        recipient: &PhoneNumber,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(MessageId, RecipientDelivery)>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(DELIVERIES_TO)
                .await
                .map_err(pg_error)?;
            let rows = client
                .query(&stmt, &[&recipient.as_str(), &since, &i64::from(limit)])
                .await
                .map_err(pg_error)?;
            rows.iter()
                .map(|row| {
                    let message = MessageId::from_uuid(row.try_get(10).map_err(pg_error)?);
                    Ok((message, delivery(row)?))
                })
                .collect()
        })
        .await
    }

    async fn unsettled(
        &self,
        vendor: &VendorId,
        after: DateTime<Utc>,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(UNSETTLED).await.map_err(pg_error)?;
            let rows = client
                .query(
                    &stmt,
                    &[&vendor.as_str(), &after, &before, &i64::from(limit)],
                )
                .await
                .map_err(pg_error)?;
            rows.iter().map(pending).collect()
        })
        .await
    }

    async fn purge(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let sent = client
                .prepare_cached(PURGE_DELIVERIES_SENT)
                .await
                .map_err(pg_error)?;
            let unmatched = client
                .prepare_cached(PURGE_DELIVERIES_UNMATCHED)
                .await
                .map_err(pg_error)?;
            let purged = client
                .execute(&sent, &[&before, &i64::from(limit)])
                .await
                .map_err(pg_error)?;
            let left = i64::from(limit).saturating_sub(i64::try_from(purged).unwrap_or(i64::MAX));
            let more = client
                .execute(&unmatched, &[&before, &left])
                .await
                .map_err(pg_error)?;
            Ok(purged + more)
        })
        .await
    }
}

/// What a receipt did to the row [`DELIVERY_RECEIPT`] returned: settled the recorded
/// send it names, or, with no send recorded yet, kept the receipt for it.
fn settled(row: &tokio_postgres::Row) -> Result<ReportApplied, StoreError> {
    let sent_at: Option<DateTime<Utc>> = row.try_get(0).map_err(pg_error)?;
    let message_id: Option<uuid::Uuid> = row.try_get(1).map_err(pg_error)?;
    // The CHECK on `deliveries` keeps a message and its send time together.
    let (Some(sent_at), Some(message_id)) = (sent_at, message_id) else {
        return Ok(ReportApplied::Kept);
    };
    let callback_url: Option<&str> = row.try_get(2).map_err(pg_error)?;
    let billed_segments: Option<i32> = row.try_get(3).map_err(pg_error)?;
    Ok(ReportApplied::Applied {
        sent_at,
        message_id: MessageId::from_uuid(message_id),
        callback_url: callback_url
            .map(|u| codec::callback_url("deliveries.callback_url", u))
            .transpose()?,
        billed_segments: billed_segments.and_then(|n| u32::try_from(n).ok()),
    })
}

/// A row of [`UNSETTLED`]'s columns.
fn pending(row: &tokio_postgres::Row) -> Result<PendingDelivery, StoreError> {
    let recipient: &str = row.try_get(1).map_err(pg_error)?;
    Ok(PendingDelivery {
        vendor_message_id: row.try_get(0).map_err(pg_error)?,
        recipient: codec::recipient(recipient)?,
        sent_at: row.try_get(2).map_err(pg_error)?,
    })
}

/// A row of [`DELIVERIES_OF`]'s columns.
fn delivery(row: &tokio_postgres::Row) -> Result<RecipientDelivery, StoreError> {
    let recipient: String = row.try_get(0).map_err(pg_error)?;
    let state: String = row.try_get(3).map_err(pg_error)?;
    let segments: Option<i32> = row.try_get(9).map_err(pg_error)?;
    Ok(RecipientDelivery {
        recipient: codec::recipient(&recipient)?,
        vendor: codec::vendor(Some(row.try_get(1).map_err(pg_error)?))?
            .ok_or_else(|| StoreError::backend("stored vendor is missing"))?,
        vendor_message_id: row.try_get(2).map_err(pg_error)?,
        state: codec::delivery_state(&state)?,
        code: row.try_get(4).map_err(pg_error)?,
        description: row.try_get(5).map_err(pg_error)?,
        sent_at: row.try_get(6).map_err(pg_error)?,
        reported_at: row.try_get(7).map_err(pg_error)?,
        receipt_at: row.try_get(8).map_err(pg_error)?,
        segments: segments.and_then(|s| u32::try_from(s).ok()),
    })
}
