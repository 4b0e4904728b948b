//! The delivery log in SQLite: [`DeliveryLog`] for [`SqliteStore`]. Each call is one
//! transaction on the store's one connection, so copies of a receipt applied together
//! settle a send once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use sms_core::{
    DeliveryLog, DeliveryReport, DeliveryState, MessageId, PhoneNumber, RecipientDelivery,
    ReportApplied, SentDelivery, StoreError,
};

use super::SqliteStore;
use super::error::sqlite_error;
use super::row::{micros, time};
use super::statements::{DELIVERIES_OF, DELIVERY_RECEIPT, DELIVERY_SENT};
use crate::codec;

#[async_trait]
impl DeliveryLog for SqliteStore {
    async fn record_sent(&self, sent: &[SentDelivery]) -> Result<(), StoreError> {
        if sent.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, String, String, String, i64)> = sent
            .iter()
            .map(|s| {
                (
                    s.vendor.as_str().to_owned(),
                    s.vendor_message_id.clone(),
                    s.recipient.as_str().to_owned(),
                    s.message_id.to_string(),
                    micros(s.sent_at),
                )
            })
            .collect();
        self.call(move |conn| {
            let tx = conn.transaction().map_err(sqlite_error)?;
            {
                let mut insert = tx.prepare_cached(DELIVERY_SENT).map_err(sqlite_error)?;
                for row in &rows {
                    insert
                        .execute(params![row.0, row.1, row.2, row.3, row.4])
                        .map_err(sqlite_error)?;
                }
            }
            tx.commit().map_err(sqlite_error)
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
                    let state = if r.delivered {
                        DeliveryState::Delivered
                    } else {
                        DeliveryState::Undelivered
                    };
                    let recorded: Option<bool> = upsert
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
                            |row| row.get(0),
                        )
                        .optional()
                        .map_err(sqlite_error)?;
                    applied.push(match recorded {
                        None => ReportApplied::Duplicate,
                        Some(true) => ReportApplied::Applied,
                        Some(false) => ReportApplied::Kept,
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
                .query_map([id], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, Option<String>>(4)?,
                        row.get::<_, Option<String>>(5)?,
                        row.get::<_, i64>(6)?,
                        row.get::<_, Option<i64>>(7)?,
                        row.get::<_, Option<i64>>(8)?,
                        row.get::<_, Option<u32>>(9)?,
                    ))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sqlite_error)?;
            rows.into_iter()
                .map(|r| {
                    Ok(RecipientDelivery {
                        recipient: PhoneNumber::parse(&r.0).map_err(|e| {
                            StoreError::backend(format!("stored recipient is invalid: {e}"))
                        })?,
                        vendor: codec::vendor(Some(r.1))?
                            .ok_or_else(|| StoreError::backend("stored vendor is missing"))?,
                        vendor_message_id: r.2,
                        state: r.3.parse().map_err(StoreError::backend)?,
                        code: r.4,
                        description: r.5,
                        sent_at: time("sent_at", r.6)?,
                        reported_at: r.7.map(|t| time("reported_at", t)).transpose()?,
                        receipt_at: r.8.map(|t| time("receipt_at", t)).transpose()?,
                        segments: r.9,
                    })
                })
                .collect()
        })
        .await
    }
}
