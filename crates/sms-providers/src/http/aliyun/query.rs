//! Aliyun `QuerySendDetails`: a send's delivery status, asked for per send.
//!
//! Aliyun answers about one number at a time, by `PhoneNumber`, `BizId` and `SendDate`
//! (the send's date in Beijing time), so a pull asks once per pending send, four at a
//! time, each bounded by the adapter's timeout; the caller bounds the work by the length
//! of the list.
//!
//! | `SendStatus` | receipt |
//! | --- | --- |
//! | 1, waiting for the carrier's receipt | none yet |
//! | 2, failed | undelivered, `code` = `ErrCode` |
//! | 3, delivered | delivered, `code` = `ErrCode` (`DELIVERED`) |
//!
//! `reported_at` is `ReceiveDate`, read as Beijing time; the receipt carries the pending
//! send's own id and number. A send accepted within a minute of midnight in Beijing may
//! be dated either side of it at Aliyun, so when its date has no record the other date
//! is asked too.
//!
//! Errors: each query stands alone, so the pull returns the receipts of every query that
//! was answered, and logs the failures. Only when no query was answered is the first
//! failure (in the order of the list) the pull's error. A failure that says something
//! about the vendor (throttling, refused credentials, 5xx, timeout) stops further
//! queries of this pull: the rest would most likely meet the same answer, and are asked
//! again next time. A query refused for its own parameters does not stop the others.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, NaiveTime, Utc};
use serde::Deserialize;
use sms_core::{DeliveryReport, PendingDelivery, ReceiptPull, VendorError, VendorId};

use super::codes::classify;
use super::{AliyunVendor, VENDOR, aliyun_number};
use crate::http::status_error;
use crate::receipts::{DASHED_TIME, beijing_time};

/// Records asked for per query. One number and `BizId` have one record; a few more
/// leave room for whatever else Aliyun lists under them.
const PAGE_SIZE: u32 = 10;
/// How near Beijing midnight a send is dated on both sides of it.
const MIDNIGHT_MARGIN_S: i64 = 60;

/// What Aliyun says about one send.
#[derive(Debug, PartialEq)]
enum Detail {
    /// Settled: its receipt.
    Settled(DeliveryReport),
    /// Sent, and waiting for the carrier's receipt.
    Waiting,
    /// No record of it on the date asked.
    NoRecord,
}

#[derive(Debug, Deserialize)]
struct DetailsAnswer {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message", default)]
    message: String,
    #[serde(rename = "SmsSendDetailDTOs")]
    details: Option<DetailList>,
}

#[derive(Debug, Default, Deserialize)]
struct DetailList {
    /// Each record is read on its own, so one odd record does not hide the others.
    #[serde(rename = "SmsSendDetailDTO", default)]
    records: Vec<serde_json::Value>,
}

/// One `SmsSendDetailDTO`, the fields a receipt needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Record {
    /// A number in the documentation; a string of digits is read too.
    send_status: serde_json::Value,
    #[serde(default)]
    err_code: Option<String>,
    #[serde(default)]
    receive_date: Option<String>,
}

fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// The `SendDate`s to ask about for a send accepted at `sent_at`: its date in Beijing,
/// then the neighbouring date when it was accepted within [`MIDNIGHT_MARGIN_S`] of it.
fn send_dates(sent_at: DateTime<Utc>) -> Vec<String> {
    let local = sent_at.with_timezone(&beijing());
    let date = local.date_naive();
    let since_midnight = (local.time() - NaiveTime::MIN).num_seconds();
    let neighbour = if since_midnight < MIDNIGHT_MARGIN_S {
        date.pred_opt()
    } else if since_midnight >= 86_400 - MIDNIGHT_MARGIN_S {
        date.succ_opt()
    } else {
        None
    };
    std::iter::once(date)
        .chain(neighbour)
        .map(|d| d.format("%Y%m%d").to_string())
        .collect()
}

impl AliyunVendor {
    /// The signed form of one `QuerySendDetails` call about `pending`, dated `send_date`.
    fn query_form(&self, pending: &PendingDelivery, send_date: String) -> String {
        self.signed_form(
            "QuerySendDetails",
            vec![
                ("BizId", pending.vendor_message_id.clone()),
                ("CurrentPage", "1".to_owned()),
                ("PageSize", PAGE_SIZE.to_string()),
                ("PhoneNumber", aliyun_number(&pending.recipient)),
                ("SendDate", send_date),
            ],
        )
    }

    /// Asks about one send: its receipt once it has settled.
    async fn query(
        &self,
        pending: &PendingDelivery,
    ) -> Result<Option<DeliveryReport>, VendorError> {
        for send_date in send_dates(pending.sent_at) {
            let (status, body) = self.post(self.query_form(pending, send_date)).await?;
            match read_details(&self.id, pending, status, &body)? {
                Detail::Settled(report) => return Ok(Some(report)),
                Detail::Waiting => return Ok(None),
                Detail::NoRecord => {}
            }
        }
        Ok(None)
    }

    /// Asks about the sends of `pending` not yet taken by another worker (`next`), one
    /// at a time, until none is left or one answer says to `stop`. Each answer comes
    /// with its send's position in the list.
    async fn query_worker(
        &self,
        pending: &[PendingDelivery],
        next: &AtomicUsize,
        stop: &AtomicBool,
    ) -> Vec<(usize, Result<Option<DeliveryReport>, VendorError>)> {
        let mut answers = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(send) = pending.get(index) else {
                break;
            };
            let answer = self.query(send).await;
            if answer
                .as_ref()
                .is_err_and(VendorError::counts_against_vendor)
            {
                stop.store(true, Ordering::Relaxed);
            }
            answers.push((index, answer));
        }
        answers
    }
}

#[async_trait]
impl ReceiptPull for AliyunVendor {
    /// Asks Aliyun about each of `pending`, four at a time. See the module documentation
    /// for how failures are reported.
    async fn pull_receipts(
        &self,
        pending: &[PendingDelivery],
    ) -> Result<Vec<DeliveryReport>, VendorError> {
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        // Four workers: a few queries in flight, well under Aliyun's rate limit.
        let (a, b, c, d) = tokio::join!(
            self.query_worker(pending, &next, &stop),
            self.query_worker(pending, &next, &stop),
            self.query_worker(pending, &next, &stop),
            self.query_worker(pending, &next, &stop),
        );
        let mut answers: Vec<_> = a.into_iter().chain(b).chain(c).chain(d).collect();
        answers.sort_unstable_by_key(|(index, _)| *index);
        let mut reports = Vec::new();
        let mut answered = 0;
        let mut failures = Vec::new();
        for (_, answer) in answers {
            match answer {
                Ok(report) => {
                    answered += 1;
                    reports.extend(report);
                }
                Err(e) => failures.push(e),
            }
        }
        let Some(first) = failures.first() else {
            return Ok(reports);
        };
        if answered == 0 {
            return Err(failures.swap_remove(0));
        }
        tracing::warn!(
            vendor = VENDOR,
            answered,
            failed = failures.len(),
            not_asked = pending.len() - answered - failures.len(),
            error = %first,
            "some QuerySendDetails queries failed; keeping the others' receipts"
        );
        Ok(reports)
    }
}

/// Reads one `QuerySendDetails` answer about `pending`. Errors come as for `SendSms`: a
/// `Code` other than `OK`, with HTTP 200 for business errors and 4xx/5xx for the
/// gateway's.
fn read_details(
    vendor: &VendorId,
    pending: &PendingDelivery,
    status: u16,
    body: &str,
) -> Result<Detail, VendorError> {
    let Ok(answer) = serde_json::from_str::<DetailsAnswer>(body) else {
        return Err(status_error(VENDOR, status, body));
    };
    let Some(code) = answer.code else {
        return Err(status_error(VENDOR, status, body));
    };
    if code != "OK" {
        return Err(classify(&code, answer.message, status));
    }
    let records = answer.details.unwrap_or_default().records;
    let mut waiting = false;
    for value in records {
        let record = match serde_json::from_value::<Record>(value) {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(vendor = VENDOR, biz_id = %pending.vendor_message_id, error = %e, "skipping a send record that cannot be read");
                continue;
            }
        };
        let delivered = match send_status(&record.send_status) {
            Some(3) => true,
            Some(2) => false,
            Some(1) => {
                waiting = true;
                continue;
            }
            other => {
                tracing::warn!(vendor = VENDOR, biz_id = %pending.vendor_message_id, send_status = ?other, "skipping a send record with an unknown SendStatus");
                continue;
            }
        };
        return Ok(Detail::Settled(DeliveryReport {
            vendor: vendor.clone(),
            vendor_message_id: pending.vendor_message_id.clone(),
            recipient: pending.recipient.clone(),
            delivered,
            code: record.err_code.filter(|c| !c.is_empty()),
            description: None,
            reported_at: record
                .receive_date
                .and_then(|d| beijing_time(&d, DASHED_TIME)),
            segments: None,
        }));
    }
    Ok(if waiting {
        Detail::Waiting
    } else {
        Detail::NoRecord
    })
}

/// `SendStatus` as a number, whether Aliyun wrote a number or a string of digits.
fn send_status(value: &serde_json::Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use sms_core::PhoneNumber;

    use super::*;

    fn vendor() -> VendorId {
        VendorId::new("aliyun").unwrap()
    }

    fn pending() -> PendingDelivery {
        PendingDelivery {
            vendor_message_id: "134523^4351232".into(),
            recipient: PhoneNumber::parse("+8613900000000").unwrap(),
            sent_at: Utc.with_ymd_and_hms(2019, 1, 8, 8, 0, 0).unwrap(),
        }
    }

    /// The documented answer's shape, one record with `status` and `err_code`.
    fn answer(status: &str, err_code: &str) -> String {
        format!(
            r#"{{"Code":"OK","Message":"OK","RequestId":"819BE656-D2E0-4858-8B21-B2E477085AAF","TotalCount":1,
               "SmsSendDetailDTOs":{{"SmsSendDetailDTO":[{{"PhoneNum":"13900000000","SendStatus":{status},
               "ErrCode":"{err_code}","TemplateCode":"SMS_12231****","Content":"【阿里云】验证码为：123，您正在登录，若非本人操作，请勿泄露",
               "SendDate":"2019-01-08 16:44:10","ReceiveDate":"2019-01-08 16:44:13","OutId":"123"}}]}}}}"#
        )
    }

    fn read(body: &str) -> Result<Detail, VendorError> {
        read_details(&vendor(), &pending(), 200, body)
    }

    #[test]
    fn a_delivered_record_is_a_receipt_for_the_pending_send() {
        assert_eq!(
            read(&answer("3", "DELIVERED")).unwrap(),
            Detail::Settled(DeliveryReport {
                vendor: vendor(),
                vendor_message_id: "134523^4351232".into(),
                recipient: PhoneNumber::parse("+8613900000000").unwrap(),
                delivered: true,
                code: Some("DELIVERED".into()),
                description: None,
                // 16:44:13 in Beijing.
                reported_at: Some(Utc.with_ymd_and_hms(2019, 1, 8, 8, 44, 13).unwrap()),
                segments: None,
            })
        );
    }

    #[test]
    fn a_failed_record_is_undelivered_and_a_waiting_one_is_no_receipt() {
        let Detail::Settled(failed) = read(&answer("2", "MK:0001")).unwrap() else {
            panic!("expected a receipt");
        };
        assert!(!failed.delivered);
        assert_eq!(failed.code.as_deref(), Some("MK:0001"));
        assert_eq!(read(&answer("1", "")).unwrap(), Detail::Waiting);
        // A status written as a string reads the same.
        assert_eq!(read(&answer(r#""1""#, "")).unwrap(), Detail::Waiting);
        assert!(matches!(
            read(&answer(r#""3""#, "DELIVERED")).unwrap(),
            Detail::Settled(r) if r.delivered
        ));
        // Unknown statuses are skipped.
        assert_eq!(read(&answer("7", "")).unwrap(), Detail::NoRecord);
    }

    #[test]
    fn no_records_is_no_record() {
        let none = r#"{"Code":"OK","Message":"OK","RequestId":"r","TotalCount":0,"SmsSendDetailDTOs":{"SmsSendDetailDTO":[]}}"#;
        assert_eq!(read(none).unwrap(), Detail::NoRecord);
        let absent = r#"{"Code":"OK","Message":"OK","RequestId":"r","TotalCount":0}"#;
        assert_eq!(read(absent).unwrap(), Detail::NoRecord);
    }

    #[test]
    fn errors_map_as_sendsms_errors_do() {
        let e = read_details(
            &vendor(),
            &pending(),
            400,
            r#"{"Code":"MissingPhoneNumber","Message":"PhoneNumber is mandatory for this action."}"#,
        )
        .unwrap_err();
        assert_eq!(e.kind(), "rejected");
        assert!(!e.counts_against_vendor());
        let e = read(r#"{"Code":"isv.INVALID_PARAMETERS","Message":"参数异常"}"#).unwrap_err();
        assert_eq!(e.kind(), "rejected");
        let e = read_details(
            &vendor(),
            &pending(),
            400,
            r#"{"Code":"Throttling.User","Message":"x"}"#,
        )
        .unwrap_err();
        assert!(matches!(e, VendorError::Throttled { .. }));
        let e = read_details(&vendor(), &pending(), 503, "down").unwrap_err();
        assert!(matches!(e, VendorError::Transient { .. }));
        assert_eq!(read("{}").unwrap_err(), VendorError::TimedOut);
    }

    #[test]
    fn the_send_date_is_beijings_and_near_midnight_both_dates_are_asked() {
        let at = |h, m, s| Utc.with_ymd_and_hms(2024, 3, 1, h, m, s).unwrap();
        // 08:00 UTC is 16:00 in Beijing, the same day.
        assert_eq!(send_dates(at(8, 0, 0)), ["20240301"]);
        // 16:30 UTC is 00:30 the next day in Beijing.
        assert_eq!(send_dates(at(16, 30, 0)), ["20240302"]);
        // 15:59:30 UTC is 23:59:30 in Beijing: the next day may hold it too.
        assert_eq!(send_dates(at(15, 59, 30)), ["20240301", "20240302"]);
        // 16:00:10 UTC is 00:00:10 in Beijing: the day before may hold it.
        assert_eq!(send_dates(at(16, 0, 10)), ["20240302", "20240301"]);
    }
}
