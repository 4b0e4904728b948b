//! Integration tests of the simulated vendors, the delivery log and the fee schedules,
//! through the crate's public API only.

mod delivery_log;
mod fees;
mod simulated;

use sms_core::{MessageId, OutboundSms, SmsRequest};

/// A message to `recipients` with one short argument.
pub fn sms_to(recipients: &[&str]) -> OutboundSms {
    OutboundSms {
        id: MessageId::new(),
        request: SmsRequest::new("login_code", ["123456"], recipients).unwrap(),
    }
}

/// A message to one recipient.
pub fn sms() -> OutboundSms {
    sms_to(&["+8613800138000"])
}
