//! Tencent Cloud `PullSmsSendStatus`: delivery receipts handed out as a queue.
//!
//! Tencent keeps the statuses of an `SmsSdkAppId`'s sends in a queue and hands each out
//! once, at most [`MAX_STATUSES_PER_CALL`] a call. So the gateway's list of pending sends
//! is not needed (nor used): each pull takes the next batch, and calls again while a
//! call comes back full, up to [`MAX_CALLS_PER_PULL`] calls.
//!
//! | field | goes to |
//! | --- | --- |
//! | `SerialNo` | `vendor_message_id` (the id `SendSms` answered for the number) |
//! | `PhoneNumber` (`+8618501234444`), else `CountryCode` + `SubscriberNumber` | `recipient` |
//! | `ReportStatus`: `SUCCESS` or `FAIL` | `delivered` (`SUCCESS` only) |
//! | `Description` (`DELIVRD`, or the carrier's code) | `code` |
//! | `UserReceiveTime`, Unix seconds | `reported_at` |
//!
//! Errors: a first call that fails is the pull's error, mapped as `SendSms`'s are. A
//! later call that fails ends the pull with the receipts already taken, since Tencent
//! will not hand those out again; the failure is logged. A status that cannot be read
//! (no `SerialNo`, no usable number) is skipped with a warning rather than failing the
//! batch, for the same reason.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sms_core::{DeliveryReport, PendingDelivery, PhoneNumber, ReceiptPull, VendorError, VendorId};

use super::codes::classify;
use super::{CodeMessage, TencentVendor, VENDOR};
use crate::http::status_error;

/// Most statuses one `PullSmsSendStatus` call hands out (its `Limit` at most).
const MAX_STATUSES_PER_CALL: u32 = 100;
/// Most calls one pull makes while each comes back full: bounds one pull's time to this
/// many times the adapter's timeout.
const MAX_CALLS_PER_PULL: usize = 5;

/// The `PullSmsSendStatus` body. Field order is fixed so the signed bytes are the sent
/// bytes.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PullBody<'a> {
    sms_sdk_app_id: &'a str,
    limit: u32,
}

#[derive(Debug, Deserialize)]
struct PullEnvelope {
    #[serde(rename = "Response")]
    response: PullAnswer,
}

#[derive(Debug, Deserialize)]
struct PullAnswer {
    #[serde(rename = "Error")]
    error: Option<CodeMessage>,
    /// Each status is read on its own, so one odd entry does not lose the others.
    #[serde(rename = "PullSmsSendStatusSet")]
    statuses: Option<Vec<serde_json::Value>>,
}

/// One entry of `PullSmsSendStatusSet`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PulledStatus {
    serial_no: String,
    #[serde(default)]
    phone_number: String,
    #[serde(default)]
    country_code: String,
    #[serde(default)]
    subscriber_number: String,
    report_status: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    user_receive_time: Option<i64>,
}

/// What one call handed out: the receipts read, and how many statuses came (read or
/// not), which says whether the queue may hold more.
#[derive(Debug)]
struct Batch {
    reports: Vec<DeliveryReport>,
    handed_out: usize,
}

impl TencentVendor {
    /// One `PullSmsSendStatus` call for the next full batch.
    async fn pull_call(&self) -> Result<Batch, VendorError> {
        let body = PullBody {
            sms_sdk_app_id: &self.config.sdk_app_id,
            limit: MAX_STATUSES_PER_CALL,
        };
        let payload = serde_json::to_string(&body).expect("the body serialises");
        let (status, text) = self.call("PullSmsSendStatus", payload).await?;
        read_pull_answer(&self.id, status, &text)
    }
}

#[async_trait]
impl ReceiptPull for TencentVendor {
    /// Takes the next statuses from Tencent's queue; `pending` is not used. See the
    /// module documentation for how failures are reported.
    async fn pull_receipts(
        &self,
        _pending: &[PendingDelivery],
    ) -> Result<Vec<DeliveryReport>, VendorError> {
        let mut reports = Vec::new();
        for call in 0..MAX_CALLS_PER_PULL {
            match self.pull_call().await {
                Ok(batch) => {
                    reports.extend(batch.reports);
                    if batch.handed_out < MAX_STATUSES_PER_CALL as usize {
                        break;
                    }
                }
                Err(e) if call == 0 => return Err(e),
                Err(e) => {
                    // Tencent will not hand out what earlier calls took: keep it.
                    tracing::warn!(
                        vendor = VENDOR,
                        calls = call,
                        taken = reports.len(),
                        error = %e,
                        "a later PullSmsSendStatus call failed; keeping the receipts already taken"
                    );
                    break;
                }
            }
        }
        Ok(reports)
    }
}

/// Reads one `PullSmsSendStatus` answer. Like `SendSms`, Tencent answers errors with
/// HTTP 200 and `Response.Error`; an answer with neither an error nor a status set is
/// unreadable ([`status_error`]: for a 2xx, an unknown outcome, as the call may have
/// taken statuses off the queue).
fn read_pull_answer(vendor: &VendorId, status: u16, body: &str) -> Result<Batch, VendorError> {
    let Ok(envelope) = serde_json::from_str::<PullEnvelope>(body) else {
        return Err(status_error(VENDOR, status, body));
    };
    let answer = envelope.response;
    if let Some(error) = answer.error {
        return Err(classify(&error.code, error.message));
    }
    let Some(statuses) = answer.statuses.filter(|_| status < 300) else {
        return Err(status_error(VENDOR, status.max(200), body));
    };
    let handed_out = statuses.len();
    let reports = statuses
        .into_iter()
        .filter_map(|entry| match report(vendor, entry) {
            Ok(report) => Some(report),
            Err(problem) => {
                // The serial number identifies the send without the recipient's number.
                tracing::warn!(vendor = VENDOR, %problem, "skipping a pulled status that cannot be read");
                None
            }
        })
        .collect();
    Ok(Batch {
        reports,
        handed_out,
    })
}

/// One pulled status as a receipt, or what is wrong with it (without the number).
fn report(vendor: &VendorId, entry: serde_json::Value) -> Result<DeliveryReport, String> {
    let status: PulledStatus =
        serde_json::from_value(entry).map_err(|e| format!("unexpected shape: {e}"))?;
    if status.serial_no.is_empty() {
        return Err("SerialNo is empty".to_owned());
    }
    let recipient = PhoneNumber::parse(&status.phone_number)
        .or_else(|_| {
            PhoneNumber::parse(&format!(
                "+{}{}",
                status.country_code, status.subscriber_number
            ))
        })
        .map_err(|e| format!("SerialNo {}: no usable number: {e}", status.serial_no))?;
    Ok(DeliveryReport {
        vendor: vendor.clone(),
        vendor_message_id: status.serial_no,
        recipient,
        delivered: status.report_status == "SUCCESS",
        code: status.description.filter(|d| !d.is_empty()),
        description: None,
        reported_at: status
            .user_receive_time
            .and_then(|seconds| DateTime::<Utc>::from_timestamp(seconds, 0)),
        segments: None,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn vendor() -> VendorId {
        VendorId::new("tencent").unwrap()
    }

    /// The documented example entry.
    const DOCUMENTED: &str = r#"{"Description":"DELIVRD","CountryCode":"86","SubscriberNumber":"18501234444","ReportStatus":"SUCCESS","PhoneNumber":"+8618501234444","SerialNo":"5000:1045710669157053657849499619","UserReceiveTime":1620734188}"#;

    fn answer(entries: &[&str]) -> String {
        format!(
            r#"{{"Response":{{"PullSmsSendStatusSet":[{}],"RequestId":"a0aabda6-cf91-4f3e-a81f-9198114a2279"}}}}"#,
            entries.join(",")
        )
    }

    #[test]
    fn the_documented_status_is_a_delivered_receipt() {
        let batch = read_pull_answer(&vendor(), 200, &answer(&[DOCUMENTED])).unwrap();
        assert_eq!(batch.handed_out, 1);
        assert_eq!(
            batch.reports,
            vec![DeliveryReport {
                vendor: vendor(),
                vendor_message_id: "5000:1045710669157053657849499619".into(),
                recipient: PhoneNumber::parse("+8618501234444").unwrap(),
                delivered: true,
                code: Some("DELIVRD".into()),
                description: None,
                reported_at: Some(Utc.timestamp_opt(1_620_734_188, 0).unwrap()),
                segments: None,
            }]
        );
    }

    #[test]
    fn a_failed_status_is_undelivered_and_the_number_may_come_in_parts() {
        let failed = r#"{"Description":"MK:0001","CountryCode":"852","SubscriberNumber":"61234567","ReportStatus":"FAIL","PhoneNumber":"","SerialNo":"s2","UserReceiveTime":1620734200,"SessionContext":"ctx"}"#;
        let batch = read_pull_answer(&vendor(), 200, &answer(&[DOCUMENTED, failed])).unwrap();
        let r = &batch.reports[1];
        assert!(!r.delivered);
        assert_eq!(r.code.as_deref(), Some("MK:0001"));
        assert_eq!(r.recipient.as_str(), "+85261234567");
        assert_eq!(r.vendor_message_id, "s2");
    }

    #[test]
    fn an_unreadable_status_is_skipped_but_counted_as_handed_out() {
        let no_serial =
            r#"{"ReportStatus":"SUCCESS","PhoneNumber":"+8618501234444","SerialNo":""}"#;
        let no_number = r#"{"ReportStatus":"SUCCESS","PhoneNumber":"x","SerialNo":"s3"}"#;
        let wrong_type = r#"{"ReportStatus":"SUCCESS","SerialNo":"s4","UserReceiveTime":"soon"}"#;
        let batch = read_pull_answer(
            &vendor(),
            200,
            &answer(&[no_serial, DOCUMENTED, no_number, wrong_type]),
        )
        .unwrap();
        assert_eq!(batch.handed_out, 4);
        assert_eq!(batch.reports.len(), 1);
    }

    #[test]
    fn an_empty_queue_is_no_receipts() {
        let batch = read_pull_answer(&vendor(), 200, &answer(&[])).unwrap();
        assert!(batch.reports.is_empty());
        assert_eq!(batch.handed_out, 0);
    }

    #[test]
    fn errors_map_as_sendsms_errors_do() {
        let error = |code: &str| {
            read_pull_answer(
                &vendor(),
                200,
                &format!(r#"{{"Response":{{"Error":{{"Code":"{code}","Message":"m"}},"RequestId":"r"}}}}"#),
            )
            .unwrap_err()
        };
        assert_eq!(error("AuthFailure.SignatureFailure").kind(), "unauthorized");
        assert_eq!(error("RequestLimitExceeded").kind(), "throttled");
        assert_eq!(
            error("InvalidParameterValue.LimitVerifyFail").kind(),
            "rejected"
        );
        assert_eq!(error("InternalError.Timeout").kind(), "transient");
        // Neither statuses nor an error: the call may have taken statuses; unknown.
        assert_eq!(
            read_pull_answer(&vendor(), 200, r#"{"Response":{"RequestId":"r"}}"#).unwrap_err(),
            VendorError::TimedOut
        );
        assert_eq!(
            read_pull_answer(&vendor(), 503, "down").unwrap_err().kind(),
            "transient"
        );
    }

    #[test]
    fn the_body_is_serialised_in_the_documented_shape() {
        let body = PullBody {
            sms_sdk_app_id: "1400006666",
            limit: MAX_STATUSES_PER_CALL,
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"SmsSdkAppId":"1400006666","Limit":100}"#
        );
    }
}
