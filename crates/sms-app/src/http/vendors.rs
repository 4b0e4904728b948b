//! `/v1/vendors`: the vendors' state, taking one out of rotation and back, and changing
//! a simulated vendor's faults.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sms_core::{Money, VendorId};
use sms_providers::simulated::SimulationSettings;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::openapi::SimulationSettingsSchema;

/// Every vendor, and which one live requests go to.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Vendors)]
pub(super) struct VendorsView {
    /// The vendor live requests go to now.
    #[schema(value_type = String)]
    current: VendorId,
    /// Every configured vendor, in failover order.
    vendors: Vec<VendorView>,
    /// With Redis: the vendor health the deployment's instances share (`board`: the
    /// current vendor, epoch, each vendor's failures, rest and switch-off, the last
    /// switch and who made it), whether this instance shares it now (`shared`: false
    /// while Redis is unreachable and it decides alone), and what each instance
    /// reported believing in the last seconds (`instances`, this one first).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    deployment: Option<sms_failover::Deployment>,
}

/// One vendor's health, volume, price and spend.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Vendor)]
pub(super) struct VendorView {
    /// The vendor's configured name.
    #[schema(value_type = String)]
    id: VendorId,
    /// Whether live requests go to it now.
    current: bool,
    /// Switched off by an operator.
    disabled: bool,
    /// Failures in a row charged to it while current.
    consecutive_failures: u32,
    /// End of its cooldown, while it rests.
    cooling_down_until: Option<DateTime<Utc>>,
    /// Messages billed this period.
    billed_this_period: u64,
    /// Price of its next message, as a decimal string (`"0.045"`).
    #[schema(value_type = String)]
    price: Money,
    /// What was spent on it this period, as a decimal string.
    #[schema(value_type = String)]
    spend: Money,
    /// Where its price changes next this period; absent past its last tier.
    next_tier: Option<NextTierView>,
    /// Whether it is a simulated vendor whose faults can be changed.
    simulated: bool,
    /// Templates it answered it has not approved (template, signature or parameters):
    /// no message of these goes to it until it is enabled again.
    broken_templates: Vec<String>,
    /// Share of its recent delivery receipts (the failover window) that said delivered;
    /// absent without receipts.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    delivery_rate: Option<f64>,
    /// Receipts that share is over.
    receipts_in_window: usize,
    /// How long its recent receipts took to come after the send, in milliseconds;
    /// absent before its first receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    receipt_latency_ms: Option<LatencyView>,
}

/// How long receipts take.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LatencyView {
    /// The median.
    p50: u64,
    /// The 95th percentile.
    p95: u64,
}

/// A vendor's next price tier.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = NextTier)]
pub(super) struct NextTierView {
    /// The billed volume this period from which the tier's price applies.
    from_volume: u64,
    /// The tier's price per message, as a decimal string.
    #[schema(value_type = String)]
    price: Money,
}

/// A vendor after an operator took it out of rotation or put it back.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct VendorToggled {
    /// The vendor.
    #[schema(value_type = String)]
    id: VendorId,
    /// Whether it is now out of rotation.
    disabled: bool,
    /// The vendor live requests go to now.
    #[schema(value_type = String)]
    current: VendorId,
}

/// A simulated vendor's new settings.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SimulationChanged {
    /// The vendor.
    id: String,
    /// Its settings now.
    #[schema(value_type = SimulationSettingsSchema)]
    simulation: SimulationSettings,
}

/// Vendors: health, volume, price, spend
#[utoipa::path(
    get,
    path = "/v1/vendors",
    responses(
        (status = 200, description = "Vendors", body = VendorsView),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
    )
)]
pub(super) async fn get_vendors(State(state): State<Arc<AppState>>) -> Json<VendorsView> {
    let vendors = state
        .gateway
        .vendors()
        .into_iter()
        .map(|v| VendorView {
            simulated: state.simulated.contains_key(v.id.as_str()),
            id: v.id,
            current: v.is_current,
            disabled: v.disabled,
            consecutive_failures: v.consecutive_failures,
            cooling_down_until: v.cooling_down_until,
            billed_this_period: v.billed_this_period,
            price: v.price,
            spend: v.spend,
            next_tier: v.next_tier.map(|t| NextTierView {
                from_volume: t.from_volume,
                price: t.price,
            }),
            broken_templates: v.broken_templates,
            delivery_rate: v.delivery_rate,
            receipts_in_window: v.receipts_in_window,
            receipt_latency_ms: v.receipt_latency.map(|(p50, p95)| LatencyView {
                p50: p50.as_millis() as u64,
                p95: p95.as_millis() as u64,
            }),
        })
        .collect();
    Json(VendorsView {
        current: state.gateway.current_vendor(),
        vendors,
        deployment: state.gateway.deployment().await,
    })
}

/// The configured vendor `name` names.
fn vendor_id(name: &str) -> Result<VendorId, ApiError> {
    VendorId::new(name).map_err(|e| ApiError::UnknownVendor(e.to_string()))
}

/// Take a vendor out of rotation
#[utoipa::path(
    post,
    path = "/v1/vendors/{name}/disable",
    params(("name" = String, Path, description = "The vendor's configured name")),
    responses(
        (status = 200, description = "Disabled", body = VendorToggled),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "No such vendor", body = ErrorBody),
    )
)]
pub(super) async fn disable_vendor(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<VendorToggled>, ApiError> {
    toggle(&state, &name, Rotation::Out).await
}

/// Put a vendor back
#[utoipa::path(
    post,
    path = "/v1/vendors/{name}/enable",
    params(("name" = String, Path, description = "The vendor's configured name")),
    responses(
        (status = 200, description = "Enabled", body = VendorToggled),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "No such vendor", body = ErrorBody),
    )
)]
pub(super) async fn enable_vendor(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<VendorToggled>, ApiError> {
    toggle(&state, &name, Rotation::In).await
}

/// Whether an operator puts a vendor in rotation or takes it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rotation {
    In,
    Out,
}

/// Puts the vendor `name` in or out of rotation, logs it, and answers with its state.
async fn toggle(
    state: &AppState,
    name: &str,
    rotation: Rotation,
) -> Result<Json<VendorToggled>, ApiError> {
    let id = vendor_id(name)?;
    let changed = match rotation {
        Rotation::In => state.gateway.enable(&id).await,
        Rotation::Out => state.gateway.disable(&id).await,
    };
    changed.map_err(|e| ApiError::UnknownVendor(e.to_string()))?;
    let disabled = rotation == Rotation::Out;
    tracing::info!(vendor = %id, enabled = !disabled, "operator changed vendor");
    Ok(Json(VendorToggled {
        id,
        disabled,
        current: state.gateway.current_vendor(),
    }))
}

/// Change a simulated vendor's faults
#[utoipa::path(
    put,
    path = "/v1/vendors/{name}/simulation",
    params(("name" = String, Path, description = "The simulated vendor's configured name")),
    request_body = SimulationSettingsSchema,
    responses(
        (status = 200, description = "Changed", body = SimulationChanged),
        (status = 400, description = "Bad settings", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "No such simulated vendor", body = ErrorBody),
    )
)]
pub(super) async fn put_simulation(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<SimulationChanged>, ApiError> {
    let Some(vendor) = state.simulated.get(&name) else {
        return Err(ApiError::UnknownVendor(format!(
            "no simulated vendor {name:?}"
        )));
    };
    let mut de = serde_json::Deserializer::from_slice(&body);
    let settings: SimulationSettings = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| ApiError::invalid(e.path().to_string(), e.into_inner().to_string()))?;
    vendor
        .set_settings(settings.clone())
        .map_err(|e| ApiError::InvalidRequest {
            field: None,
            message: e.to_string(),
        })?;
    tracing::info!(vendor = %name, "simulation settings changed");
    Ok(Json(SimulationChanged {
        id: name,
        simulation: settings,
    }))
}
