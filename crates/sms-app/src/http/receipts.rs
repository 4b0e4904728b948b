//! Delivery receipts pushed by the vendors: `POST /v1/receipts/{vendor}/{secret}`.
//!
//! A vendor cannot send our bearer token, so the secret in the address is the
//! credential: one per vendor from `[receipts] secrets`, compared in constant time. A
//! wrong secret, or a vendor without one, gets the same 404 as an address that does
//! not exist. The body is read in the vendor's own format; a body that is not one is
//! 400. Stored receipts are answered as the vendor expects, so that it stops pushing
//! them: the same receipt again changes nothing, and a receipt for a send not recorded
//! (yet) is kept, to be applied when the send is recorded, and counted.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use sms_core::{ReportApplied, VendorId};
use sms_providers::receipts::{ReceiptError, ReceiptFormat};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ErrorBody};

/// Where one vendor's receipts come in.
#[derive(Debug, Clone)]
pub struct ReceiptEndpoint {
    /// The vendor.
    pub vendor: VendorId,
    /// Its receipt format.
    pub format: ReceiptFormat,
    /// The secret in its address.
    pub secret: String,
}

/// Receipt endpoints by vendor name.
pub type ReceiptEndpoints = HashMap<String, ReceiptEndpoint>;

/// A vendor's delivery receipts
#[utoipa::path(
    post,
    path = "/v1/receipts/{vendor}/{secret}",
    params(
        ("vendor" = String, Path, description = "The vendor's name in the configuration"),
        ("secret" = String, Path, description = "The vendor's receipt secret"),
    ),
    request_body(content = String, description = "The vendor's own receipt push: Aliyun SmsReport or Tencent status callback (JSON arrays), Cloopen SMSArrived (JSON or XML)"),
    responses(
        (status = 200, description = "Stored (or known already); the body is the answer the vendor expects", body = String),
        (status = 400, description = "Not a receipt push in the vendor's format", body = ErrorBody),
        (status = 404, description = "No receipt endpoint at this address", body = ErrorBody),
        (status = 503, description = "Storage unavailable; the vendor pushes again later", body = ErrorBody),
    )
)]
pub(super) async fn post_receipts(
    State(state): State<Arc<AppState>>,
    Path((vendor, secret)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let endpoint = state
        .receipts
        .get(&vendor)
        .filter(|e| bool::from(e.secret.as_bytes().ct_eq(secret.as_bytes())))
        .ok_or(ApiError::NoReceiptEndpoint)?;
    let reports = match endpoint.format.parse(&endpoint.vendor, &body) {
        Ok(reports) => reports,
        Err(ReceiptError::NotAReceipt { .. }) => {
            // Something else the vendor pushes to the same address (a reply to a
            // message): nothing to store, and answered so that it is not pushed again.
            tracing::info!(vendor = %endpoint.vendor, "a push that is not a delivery receipt was ignored");
            return Ok(acknowledge(endpoint.format));
        }
        Err(e) => return Err(ApiError::invalid("body", e.to_string())),
    };
    let applied = state
        .deliveries
        .apply_reports(&reports, Utc::now())
        .await
        .map_err(|e| ApiError::StorageUnavailable(e.to_string()))?;
    state.gateway.receipts_applied(&reports, &applied).await;
    state.metrics.receipts(&reports, &applied);
    let kept = applied
        .iter()
        .filter(|a| **a == ReportApplied::Kept)
        .count();
    if kept > 0 {
        // Usually a receipt that came before its send was recorded; one that never
        // finds its send names an id this gateway did not send.
        tracing::info!(vendor = %endpoint.vendor, kept, receipts = reports.len(), "receipts for sends not recorded (yet) were kept");
    }
    Ok(acknowledge(endpoint.format))
}

/// The answer `format`'s vendor expects for receipts it should not push again.
fn acknowledge(format: ReceiptFormat) -> Response {
    let (content_type, body) = format.acknowledgement();
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}
