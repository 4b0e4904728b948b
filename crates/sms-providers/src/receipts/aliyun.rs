//! Aliyun SmsReport, HTTP batch push: the body is a JSON array of receipts, one object
//! per recipient, several sends mixed in one push.
//!
//! | field | type | goes to |
//! | --- | --- | --- |
//! | `biz_id` | string, required | `vendor_message_id` (the send's `BizId`) |
//! | `phone_number` | string, required | `recipient`, normalised (Aliyun writes mainland numbers without `+86`) |
//! | `success` | boolean, required | `delivered` |
//! | `err_code` | string | `code` (`DELIVERED` on success, else the carrier's code) |
//! | `err_msg` | string | `description` |
//! | `report_time` | `yyyy-MM-dd HH:mm:ss`, Beijing time | `reported_at` |
//! | `sms_size` | string or number | `segments` |
//! | `send_time`, `out_id` | | not used |
//!
//! The push is acknowledged with `{"code":0,"msg":"成功"}` (Aliyun only checks that
//! `code` is a number, and pushes again on any HTTP status other than 200).

use sms_core::{DeliveryReport, VendorId};

use super::{DASHED_TIME, Item, ReceiptError, ReceiptFormat, json_objects};

const FORMAT: ReceiptFormat = ReceiptFormat::Aliyun;

/// Reads an SmsReport push.
pub(super) fn parse(vendor: &VendorId, body: &[u8]) -> Result<Vec<DeliveryReport>, ReceiptError> {
    json_objects(FORMAT, body)?
        .iter()
        .enumerate()
        .map(|(index, fields)| {
            let item = Item::new(FORMAT, index, fields);
            Ok(DeliveryReport {
                vendor: vendor.clone(),
                vendor_message_id: item.required("biz_id")?,
                recipient: item.phone("phone_number")?,
                delivered: item.required_bool("success")?,
                code: item.text("err_code")?,
                description: item.text("err_msg")?,
                reported_at: item.time("report_time", DASHED_TIME)?,
                segments: item.count("sms_size"),
            })
        })
        .collect()
}

/// The answer that stops Aliyun pushing the receipts again.
pub(super) fn acknowledgement() -> (&'static str, String) {
    ("application/json", r#"{"code":0,"msg":"成功"}"#.to_owned())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use sms_core::PhoneNumber;

    use super::*;

    fn vendor() -> VendorId {
        VendorId::new("aliyun-main").unwrap()
    }

    fn parse_str(body: &str) -> Result<Vec<DeliveryReport>, ReceiptError> {
        ReceiptFormat::Aliyun.parse(&vendor(), body.as_bytes())
    }

    /// The documented example, with a real number: a delivered receipt.
    const DELIVERED: &str = r#"[
      {
        "phone_number" : "13800138000",
        "send_time" : "2017-01-01 00:00:00",
        "report_time" : "2017-01-01 00:00:00",
        "success" : true,
        "err_code" : "DELIVERED",
        "err_msg" : "用户接收成功",
        "sms_size" : "1",
        "biz_id" : "12345",
        "out_id" : "67890"
      }
    ]"#;

    #[test]
    fn a_delivered_receipt() {
        let reports = parse_str(DELIVERED).unwrap();
        assert_eq!(
            reports,
            vec![DeliveryReport {
                vendor: vendor(),
                vendor_message_id: "12345".to_owned(),
                recipient: PhoneNumber::parse("+8613800138000").unwrap(),
                delivered: true,
                code: Some("DELIVERED".to_owned()),
                description: Some("用户接收成功".to_owned()),
                reported_at: Some(Utc.with_ymd_and_hms(2016, 12, 31, 16, 0, 0).unwrap()),
                segments: Some(1),
            }]
        );
    }

    #[test]
    fn a_failed_receipt_and_a_delivered_one_in_one_push() {
        let body = r#"[
          {
            "phone_number": "8613900000001",
            "send_time": "2017-05-29 00:00:58",
            "report_time": "2017-05-29 00:01:05",
            "success": false,
            "err_code": "MK:0001",
            "err_msg": "号码状态异常",
            "sms_size": 2,
            "biz_id": "900619746936498440^0",
            "out_id": ""
          },
          {
            "phone_number": "+85261234567",
            "send_time": "2017-05-29 00:00:58",
            "report_time": "2017-05-29 00:00:59",
            "success": true,
            "err_code": "DELIVERED",
            "err_msg": "用户接收成功",
            "sms_size": "3",
            "biz_id": "900619746936498440^0",
            "out_id": "order-17"
          }
        ]"#;
        let reports = parse_str(body).unwrap();
        assert_eq!(
            reports,
            vec![
                DeliveryReport {
                    vendor: vendor(),
                    vendor_message_id: "900619746936498440^0".to_owned(),
                    recipient: PhoneNumber::parse("+8613900000001").unwrap(),
                    delivered: false,
                    code: Some("MK:0001".to_owned()),
                    description: Some("号码状态异常".to_owned()),
                    reported_at: Some(Utc.with_ymd_and_hms(2017, 5, 28, 16, 1, 5).unwrap()),
                    segments: Some(2),
                },
                DeliveryReport {
                    vendor: vendor(),
                    vendor_message_id: "900619746936498440^0".to_owned(),
                    recipient: PhoneNumber::parse("+85261234567").unwrap(),
                    delivered: true,
                    code: Some("DELIVERED".to_owned()),
                    description: Some("用户接收成功".to_owned()),
                    reported_at: Some(Utc.with_ymd_and_hms(2017, 5, 28, 16, 0, 59).unwrap()),
                    segments: Some(3),
                },
            ]
        );
    }

    #[test]
    fn optional_fields_may_be_missing_and_a_bad_time_is_not_fatal() {
        let body = r#"[{"phone_number":"13800138000","success":false,"biz_id":"7",
                        "report_time":"29/05/2017 00:01"}]"#;
        let reports = parse_str(body).unwrap();
        assert_eq!(reports.len(), 1);
        let report = &reports[0];
        assert!(!report.delivered);
        assert_eq!(report.code, None);
        assert_eq!(report.description, None);
        assert_eq!(report.reported_at, None);
        assert_eq!(report.segments, None);
    }

    #[test]
    fn a_missing_field_is_named() {
        let body = r#"[
          {"phone_number":"13800138000","success":true,"biz_id":"1"},
          {"phone_number":"13800138001","success":true}
        ]"#;
        let err = parse_str(body).unwrap_err();
        assert_eq!(
            err,
            ReceiptError::MissingField {
                format: ReceiptFormat::Aliyun,
                index: 1,
                field: "biz_id"
            }
        );
        assert_eq!(
            err.to_string(),
            "aliyun receipt item 1: missing field `biz_id`"
        );

        let err = parse_str(r#"[{"phone_number":"13800138000","biz_id":"1"}]"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "aliyun receipt item 0: missing field `success`"
        );
    }

    #[test]
    fn a_bad_number_names_the_item() {
        let body = r#"[
          {"phone_number":"13800138000","success":true,"biz_id":"1"},
          {"phone_number":"1381111****","success":true,"biz_id":"1"}
        ]"#;
        let err = parse_str(body).unwrap_err();
        assert!(
            matches!(
                &err,
                ReceiptError::BadPhoneNumber {
                    index: 1,
                    field: "phone_number",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with(
                "aliyun receipt item 1: field `phone_number` is not a usable phone number:"
            ),
            "{err}"
        );
        assert!(!err.to_string().contains("1381111"), "{err}");
    }

    #[test]
    fn a_wrongly_typed_field_is_named() {
        let body = r#"[{"phone_number":"13800138000","success":1,"biz_id":"1"}]"#;
        assert_eq!(
            parse_str(body).unwrap_err().to_string(),
            "aliyun receipt item 0: field `success`: expected true or false, found a number"
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let err = parse_str(r#"[{"phone_number": "13800138000",]"#).unwrap_err();
        assert!(matches!(err, ReceiptError::Json { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("aliyun receipt: the body is not valid JSON: "),
            "{err}"
        );

        let err = parse_str(r#"{"phone_number":"13800138000"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "aliyun receipt: expected a JSON array of receipts, found an object"
        );
    }

    #[test]
    fn an_empty_push_is_refused() {
        assert_eq!(
            parse_str(" [ ] ").unwrap_err(),
            ReceiptError::Empty {
                format: ReceiptFormat::Aliyun
            }
        );
        assert_eq!(
            parse_str("[]").unwrap_err().to_string(),
            "aliyun receipt: no receipts in the body"
        );
    }

    #[test]
    fn the_acknowledgement_is_the_documented_one() {
        let (content_type, body) = ReceiptFormat::Aliyun.acknowledgement();
        assert_eq!(content_type, "application/json");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body, serde_json::json!({"code": 0, "msg": "成功"}));
    }
}
