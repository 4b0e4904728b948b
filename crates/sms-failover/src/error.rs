//! Errors of building and steering the gateway (sending reports `sms_core::SendError`).

use sms_core::{ValidationError, VendorId};

/// What went wrong when building the gateway or changing a vendor's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailoverError {
    /// The gateway needs at least one vendor.
    #[error("expected at least one vendor, found none")]
    NoVendors,
    /// More vendors than the gateway can route between.
    #[error("expected at most {max} vendors, found {found}")]
    TooManyVendors {
        /// The most accepted.
        max: usize,
        /// How many were given.
        found: usize,
    },
    /// Two vendors share a name.
    #[error("vendor {0} is configured twice")]
    DuplicateVendor(VendorId),
    /// No vendor has that name.
    #[error("no vendor named {0}")]
    UnknownVendor(VendorId),
    /// A template names a vendor that is not configured.
    #[error("{0}")]
    InvalidTemplates(ValidationError),
    /// A configuration value is out of range.
    #[error("failover.{field}: {problem}")]
    InvalidConfig {
        /// The configuration key.
        field: &'static str,
        /// What was expected and what was found.
        problem: String,
    },
}
