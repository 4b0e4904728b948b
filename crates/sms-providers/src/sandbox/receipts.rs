//! The sandbox's delivery receipts: pushed to each route's receipt address, in its
//! vendor's format, a while after each accepted send, as the real vendors push them.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use sms_core::{DeliveryReport, PhoneNumber};

use super::{Delivery, SandboxState, SandboxVendor};
use crate::receipts::ReceiptFormat;

impl SandboxState {
    /// Pushes the receipts of `deliveries` to each route's receipt address, after the
    /// configured delay, in its vendor's format; each delivered or not as its drawn
    /// `fates` say (the same fates the pull APIs answer). A failed push is tried twice
    /// more, a second apart, as vendors retry.
    pub(super) fn push_receipts(&self, deliveries: &[Delivery], fates: &[bool]) {
        let pushes = &self.config.receipts;
        let now = Utc::now() + chrono::Duration::milliseconds(pushes.delay_ms as i64);
        // By address and the route that accepted them.
        let mut by_route: HashMap<(&str, SandboxVendor), Vec<DeliveryReport>> = HashMap::new();
        for (d, &delivered) in deliveries.iter().zip(fates) {
            let Ok(route) = SandboxVendor::from_str(&d.vendor) else {
                continue;
            };
            let (url, vendor) = match route {
                SandboxVendor::Aliyun => (&pushes.aliyun, &self.config.aliyun.vendor),
                SandboxVendor::Tencent => (&pushes.tencent, &self.config.tencent.vendor),
                SandboxVendor::Cloopen => (&pushes.cloopen, &self.config.cloopen.vendor),
            };
            let (Some(url), Ok(recipient)) = (url, PhoneNumber::parse(&d.recipient)) else {
                continue;
            };
            by_route
                .entry((url.as_str(), route))
                .or_default()
                .push(DeliveryReport {
                    vendor: vendor.clone(),
                    vendor_message_id: d.vendor_message_id.clone(),
                    recipient,
                    delivered,
                    code: None,
                    description: None,
                    reported_at: Some(now),
                    segments: None,
                });
        }
        for ((url, route), reports) in by_route {
            let format = ReceiptFormat::from(route.protocol());
            let (client, url) = (self.client.clone(), url.to_owned());
            let bodies = format.render(&reports);
            let delay = Duration::from_millis(pushes.delay_ms);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                for body in bodies {
                    push(&client, &url, body).await;
                }
            });
        }
    }
}

/// Posts one receipt push, trying three times, a second apart.
async fn push(client: &reqwest::Client, url: &str, body: String) {
    for attempt in 1..=3 {
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => return,
            Ok(answer) => {
                tracing::warn!(status = %answer.status(), attempt, "sandbox: a receipt push was refused");
            }
            Err(e) => tracing::warn!(error = %e, attempt, "sandbox: a receipt push failed"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
