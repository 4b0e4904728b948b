//! Re-sending undelivered messages. When a recipient's receipt says undelivered and
//! the message's template sets `resend_undelivered` (login codes), the gateway stores a
//! new message for that recipient, marked as a re-send of the first and kept from the
//! vendor that failed, and the drain sends it through another vendor. It happens once:
//! the new message's idempotency key is made from the message and the recipient, and a
//! re-send is never re-sent. A message past its deliver-by time is not re-sent, nor one
//! without a deliver-by time made more than 10 minutes ago, nor one no other vendor can
//! take.

use sms_core::{
    CallbackStatus, DeliveryReport, Enqueued, IdempotencyKey, MessageId, NewMessage, QueueReason,
    ReportApplied, Resend, SmsRequest, StatusEvent, StoreError,
};

use super::Gateway;
use crate::events::GatewayEvent;

/// How long after it was made a message without a deliver-by time may be re-sent.
const RESEND_WITHOUT_DEADLINE: chrono::Duration = chrono::Duration::minutes(10);

impl Gateway {
    /// Re-sends, where their templates ask for it, the messages whose receipts in
    /// `reports` settled a recipient as undelivered (`applied[i]` is `reports[i]`'s).
    pub(crate) async fn resend_undelivered(
        &self,
        reports: &[DeliveryReport],
        applied: &[ReportApplied],
    ) {
        if !self.templates.iter().any(|(_, t)| t.resend_undelivered) {
            return;
        }
        for (report, outcome) in reports.iter().zip(applied) {
            let ReportApplied::Applied { message_id, .. } = outcome else {
                continue;
            };
            if report.delivered {
                continue;
            }
            if let Err(e) = self.resend(*message_id, report).await {
                tracing::warn!(message = %message_id, error = %e, "could not re-send an undelivered message");
            }
        }
    }

    /// Stores the re-send of message `id` to the recipient `report` is about, when its
    /// template asks for one and another vendor can take it.
    async fn resend(&self, id: MessageId, report: &DeliveryReport) -> Result<(), StoreError> {
        let Some(original) = self.queue.get(id).await? else {
            tracing::debug!(message = %id, "undelivered message no longer stored; not re-sent");
            return Ok(());
        };
        let request = &original.request;
        let name = request.template().as_str();
        let wanted = self
            .templates
            .get(name)
            .is_some_and(|t| t.resend_undelivered);
        let now = self.clock.now();
        // A code without a deliver-by time is still re-sent only soon after it was
        // made: one that comes hours later is of no use and confuses the user.
        let too_late = request.expires_at().map_or_else(
            || now - original.created_at > RESEND_WITHOUT_DEADLINE,
            |deadline| now >= deadline,
        );
        if !wanted || request.resend().is_some() || too_late {
            return Ok(());
        }
        if !self.ids.contains(&report.vendor) {
            return Ok(());
        }
        let Some(resend) = resend_request(id, request, report) else {
            return Ok(());
        };
        // The route the drain will give it, which keeps away from that vendor.
        if self.route(&self.health(), &resend, None).eligible == 0 {
            tracing::info!(message = %id, vendor = %report.vendor, "undelivered, but no other vendor has its template; not re-sent");
            return Ok(());
        }
        let new_id = MessageId::at(now);
        let message = NewMessage::queued(
            new_id,
            resend.clone(),
            QueueReason::Accepted,
            self.config.max_attempts,
            now,
        );
        if let Enqueued::Created(_) = self.queue.enqueue(message).await? {
            tracing::info!(message = %id, resend = %new_id, avoided = %report.vendor, "re-sending an undelivered message through another vendor");
            self.emit(|| GatewayEvent::Resent {
                original: id,
                id: new_id,
                avoided: report.vendor.clone(),
            });
            if let Some((callbacks, url)) = self.callbacks_for(resend.callback_url()) {
                let mut event = StatusEvent::new(new_id, CallbackStatus::Queued, now);
                event.code = Some("resend".to_owned());
                event.resend_of = Some(id);
                event.recipient = Some(report.recipient.clone());
                callbacks.record(&url, [event]).await;
            }
            self.trigger_drain();
        }
        Ok(())
    }
}

/// The re-send of `request` (message `id`) to the recipient of `report`: the same
/// template, arguments, deliver-by time and callback URL, one recipient, a key of its
/// own so that it is made once.
fn resend_request(
    id: MessageId,
    request: &SmsRequest,
    report: &DeliveryReport,
) -> Option<SmsRequest> {
    let key = IdempotencyKey::new(&format!("resend:{id}:{}", report.recipient.as_str())).ok()?;
    let mut resend = SmsRequest::new(
        request.template().as_str(),
        request.args().iter().cloned(),
        [report.recipient.as_str()],
    )
    .ok()?
    .with_idempotency_key(key)
    .with_resend(Resend {
        of: id,
        avoid: report.vendor.clone(),
    });
    if let Some(deadline) = request.expires_at() {
        resend = resend.with_expiry(deadline);
    }
    if let Some(url) = request.callback_url() {
        resend = resend.with_callback_url(url.clone());
    }
    Some(resend)
}
