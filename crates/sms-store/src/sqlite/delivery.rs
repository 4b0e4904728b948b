//! The delivery log in SQLite: [`DeliveryLog`] for [`SqliteStore`]. Each call is one
//! transaction on the store's one connection, so copies of a receipt applied together
//! settle a send once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use sms_core::{
    DeliveryLog, DeliveryReport, MessageId, PendingDelivery, PhoneNumber, RecipientDelivery,
    ReportApplied, SentDelivery, StoreError, VendorId,
};

use super::SqliteStore;
use super::error::sqlite_error;
use super::row::{micros, time};
use super::statements::{
    DELIVERIES_OF, DELIVERIES_TO, DELIVERY_RECEIPT, DELIVERY_SENT, PURGE_DELIVERIES_SENT,
    PURGE_DELIVERIES_UNMATCHED, UNSETTLED,
};
use crate::codec;

#[async_trait]
impl DeliveryLog for SqliteStore {
    async fn record_sent(
        &self,
        sent: &[SentDelivery],
    ) -> Result<Vec<(DeliveryReport, ReportApplied)>, StoreError> {
        if sent.is_empty() {
            return Ok(Vec::new());
        }
        let sent = sent.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction().map_err(sqlite_error)?;
            let mut settled = Vec::new();
            {
                let mut insert = tx.prepare_cached(DELIVERY_SENT).map_err(sqlite_error)?;
                for s in &sent {
                    let written: Option<WrittenRow> = insert
                        .query_row(
                            params![
                                s.vendor.as_str(),
                                s.vendor_message_id,
                                s.recipient.as_str(),
                                s.message_id.to_string(),
                                micros(s.sent_at),
                                s.callback_url.as_ref().map(|u| u.as_str()),
                                s.billed_segments,
                            ],
                            |row| {
                                Ok((
                                    row.get(0)?,
                                    row.get(1)?,
                                    row.get(2)?,
                                    row.get(3)?,
                                    row.get(4)?,
                                    row.get(5)?,
                                ))
                            },
                        )
                        .optional()
                        .map_err(sqlite_error)?;
                    // A row written with a receipt already on it was a kept receipt.
                    if let Some((Some(_), state, code, description, reported_at, segments)) =
                        written
                    {
                        let reported_at =
                            reported_at.map(|t| time("reported_at", t)).transpose()?;
                        settled.push(codec::kept_receipt_settled(
                            s,
                            &state,
                            code,
                            description,
                            reported_at,
                            segments,
                        )?);
                    }
                }
            }
            tx.commit().map_err(sqlite_error)?;
            Ok(settled)
        })
        .await
    }

    async fn apply_reports(
        &self,
        reports: &[DeliveryReport],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReportApplied>, StoreError> {
        let reports = reports.to_vec();
        let received = micros(now);
        self.call(move |conn| {
            let tx = conn.transaction().map_err(sqlite_error)?;
            let mut applied = Vec::with_capacity(reports.len());
            {
                let mut upsert = tx.prepare_cached(DELIVERY_RECEIPT).map_err(sqlite_error)?;
                for r in &reports {
                    let state = r.state();
                    let settled: Option<SettledRow> = upsert
                        .query_row(
                            params![
                                r.vendor.as_str(),
                                r.vendor_message_id,
                                r.recipient.as_str(),
                                state.as_str(),
                                r.code,
                                r.description,
                                r.reported_at.map(micros),
                                received,
                                r.segments,
                            ],
                            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                        )
                        .optional()
                        .map_err(sqlite_error)?;
                    applied.push(match settled {
                        None => ReportApplied::Duplicate,
                        Some((Some(sent_at), Some(message_id), callback_url, billed_segments)) => {
                            ReportApplied::Applied {
                                sent_at: time("sent_at", sent_at)?,
                                message_id: message_id_column(&message_id)?,
                                callback_url: callback_url
                                    .map(|u| codec::callback_url("deliveries.callback_url", &u))
                                    .transpose()?,
                                billed_segments,
                            }
                        }
                        // The CHECK on `deliveries` keeps a message and its send time
                        // together: a row with neither is a receipt kept for later.
                        Some(_) => ReportApplied::Kept,
                    });
                }
            }
            tx.commit().map_err(sqlite_error)?;
            Ok(applied)
        })
        .await
    }

    async fn deliveries(&self, id: MessageId) -> Result<Vec<RecipientDelivery>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            let mut select = conn.prepare_cached(DELIVERIES_OF).map_err(sqlite_error)?;
            let rows = select
                .query_map([id], columns)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sqlite_error)?;
            rows.into_iter().map(delivery).collect()
        })
        .await
    }

    async fn sent_to(
        &self,
        recipient: &PhoneNumber,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(MessageId, RecipientDelivery)>, StoreError> {
        let recipient = recipient.as_str().to_owned();
        let since = micros(since);
        self.call(move |conn| {
            let mut select = conn.prepare_cached(DELIVERIES_TO).map_err(sqlite_error)?;
            let rows = select
                .query_map(params![recipient, since, limit], |row| {
                    Ok((row.get::<_, String>(10)?, columns(row)?))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sqlite_error)?;
            rows.into_iter()
                .map(|(message, columns)| Ok((message_id_column(&message)?, delivery(columns)?)))
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
        let vendor = vendor.as_str().to_owned();
        let (after, before) = (micros(after), micros(before));
        self.call(move |conn| {
            let mut select = conn.prepare_cached(UNSETTLED).map_err(sqlite_error)?;
            let rows = select
                .query_map(params![vendor, after, before, limit], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<PendingRow>>>())
                .map_err(sqlite_error)?;
            rows.into_iter()
                .map(|(vendor_message_id, recipient, sent_at)| {
                    Ok(PendingDelivery {
                        vendor_message_id,
                        recipient: codec::recipient(&recipient)?,
                        sent_at: time("sent_at", sent_at)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn purge(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let before = micros(before);
        self.call(move |conn| {
            let sent = conn
                .prepare_cached(PURGE_DELIVERIES_SENT)
                .and_then(|mut s| s.execute(params![before, limit]))
                .map_err(sqlite_error)?;
            let left = limit.saturating_sub(u32::try_from(sent).unwrap_or(u32::MAX));
            let unmatched = conn
                .prepare_cached(PURGE_DELIVERIES_UNMATCHED)
                .and_then(|mut s| s.execute(params![before, left]))
                .map_err(sqlite_error)?;
            Ok((sent + unmatched) as u64)
        })
        .await
    }
}

/// What [`DELIVERY_SENT`] returns of the row it wrote: receipt time (set when a kept
/// receipt was waiting), state, code, description, reported time and segments.
type WrittenRow = (
    Option<i64>,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<u32>,
);

/// What [`DELIVERY_RECEIPT`] returns of the row it settled: send time, message and
/// callback URL, the first two NULL while the send is not recorded.
type SettledRow = (Option<i64>, Option<String>, Option<String>, Option<u32>);

/// The columns of [`UNSETTLED`], as stored: vendor id, recipient and send time.
type PendingRow = (String, String, i64);

fn message_id_column(text: &str) -> Result<MessageId, StoreError> {
    text.parse()
        .map_err(|e| StoreError::backend(format!("stored message_id is invalid: {e}")))
}

/// The columns of [`DELIVERIES_OF`], as stored.
type Columns = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<u32>,
);

fn columns(row: &rusqlite::Row<'_>) -> rusqlite::Result<Columns> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
    ))
}

fn delivery(r: Columns) -> Result<RecipientDelivery, StoreError> {
    Ok(RecipientDelivery {
        recipient: codec::recipient(&r.0)?,
        vendor: codec::vendor(Some(r.1))?
            .ok_or_else(|| StoreError::backend("stored vendor is missing"))?,
        vendor_message_id: r.2,
        state: codec::delivery_state(&r.3)?,
        code: r.4,
        description: r.5,
        sent_at: time("sent_at", r.6)?,
        reported_at: r.7.map(|t| time("reported_at", t)).transpose()?,
        receipt_at: r.8.map(|t| time("receipt_at", t)).transpose()?,
        segments: r.9,
    })
}
