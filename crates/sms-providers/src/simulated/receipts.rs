//! Delivery receipts of a simulated vendor: pushed to a [`ReceiptSink`] a while after
//! each accepted send, as a real vendor pushes them to its receipt address.

use sms_core::DeliveryReport;
use sms_core::PhoneNumber;
use sms_core::sync::{lock, read, write};

use super::{ReceiptPlan, ReceiptSink, SimulatedVendor, pause};
use rand::Rng;

impl SimulatedVendor {
    /// Sends delivery receipts for `recipients` to `sink` (if one is set) after
    /// `plan`'s delay, each delivered as drawn at its delivery rate; none when silent.
    pub(super) fn push_receipts(
        &self,
        plan: ReceiptPlan,
        vendor_message_id: &str,
        recipients: &[PhoneNumber],
    ) {
        let Some(sink) = read(&self.receipts).clone() else {
            return;
        };
        if plan.silent || recipients.is_empty() {
            return;
        }
        let reported_at = self.clock.now()
            + chrono::Duration::from_std(plan.delay).unwrap_or(chrono::Duration::zero());
        let reports: Vec<DeliveryReport> = {
            let mut rng = lock(&self.rng);
            recipients
                .iter()
                .map(|recipient| {
                    let delivered = rng.random::<f64>() < plan.delivery_rate;
                    DeliveryReport {
                        vendor: self.id.clone(),
                        vendor_message_id: vendor_message_id.to_owned(),
                        recipient: recipient.clone(),
                        delivered,
                        code: Some(if delivered { "DELIVRD" } else { "UNDELIV" }.to_owned()),
                        description: (!delivered)
                            .then(|| "simulated: the carrier did not deliver it".to_owned()),
                        reported_at: Some(reported_at),
                        segments: None,
                    }
                })
                .collect()
        };
        tokio::spawn(async move {
            pause(plan.delay).await;
            sink(reports);
        });
    }

    /// Makes the vendor send delivery receipts to `sink`.
    pub fn set_receipt_sink(&self, sink: ReceiptSink) {
        *write(&self.receipts) = Some(sink);
    }
}
