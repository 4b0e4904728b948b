//! Integration tests of the simulated vendors, the delivery log and the fee schedules,
//! through the crate's public API only.

mod delivery_log;
mod fees;
mod simulated;
mod vendor_rules;

use sms_core::{MessageId, OutboundSms, SmsRequest};

/// A message to `recipients` with one short argument, as a gateway without a template
/// catalogue hands it over (template id = the request's template name, no text).
pub fn sms_to(recipients: &[&str]) -> OutboundSms {
    OutboundSms::pass_through(
        MessageId::new(),
        SmsRequest::new("login_code", ["123456"], recipients).unwrap(),
    )
}

/// A message to one recipient.
pub fn sms() -> OutboundSms {
    sms_to(&["+8613800138000"])
}
