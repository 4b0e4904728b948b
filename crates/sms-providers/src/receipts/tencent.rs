//! Tencent Cloud SMS status callback ("SMS Sending Status Notification"): the body is a
//! JSON array of receipts, one object per recipient; one callback may carry the results
//! of several sends.
//!
//! | field | type | goes to |
//! | --- | --- | --- |
//! | `sid` | string, required | `vendor_message_id` (the `SerialNo` the send answered) |
//! | `mobile` | string, required | `recipient`: `+{nationcode}{mobile}`, else normalised |
//! | `nationcode` | string | the country code in front of `mobile` (`86`) |
//! | `report_status` | `SUCCESS` or `FAIL`, required | `delivered` |
//! | `errmsg` | string | `code` (`DELIVRD` on success, else the carrier's code) |
//! | `description` | string | `description` |
//! | `user_receive_time` | `yyyy-MM-dd HH:mm:ss`, Beijing time | `reported_at` |
//!
//! Without a `nationcode`, or when `mobile` already starts with `+` or `00`, `mobile` is
//! normalised like the other vendors' numbers. The documented callback has no billed
//! count (a `fee` member, should one come, is not read), so `segments` is always `None`.
//!
//! The callback is acknowledged with `{"result":0,"errmsg":"OK"}`.

use sms_core::{DeliveryReport, PhoneNumber, VendorId};

use super::{DASHED_TIME, Item, ReceiptError, ReceiptFormat, json_objects, normalise_number};

const FORMAT: ReceiptFormat = ReceiptFormat::Tencent;

/// Reads a status callback.
pub(super) fn parse(vendor: &VendorId, body: &[u8]) -> Result<Vec<DeliveryReport>, ReceiptError> {
    json_objects(FORMAT, body)?
        .iter()
        .enumerate()
        .map(|(index, fields)| {
            let item = Item::new(FORMAT, index, fields);
            Ok(DeliveryReport {
                vendor: vendor.clone(),
                vendor_message_id: item.required("sid")?,
                recipient: recipient(&item)?,
                delivered: delivered(&item)?,
                code: item.text("errmsg")?,
                description: item.text("description")?,
                reported_at: item.time("user_receive_time", DASHED_TIME)?,
                segments: None,
            })
        })
        .collect()
}

/// `+{nationcode}{mobile}`, or `mobile` alone, normalised, when there is no country code
/// or the number already carries one.
fn recipient(item: &Item<'_>) -> Result<PhoneNumber, ReceiptError> {
    let mobile = item.required("mobile")?;
    let nationcode = item.text("nationcode")?;
    let nationcode = nationcode
        .as_deref()
        .map(|code| code.trim_start_matches('+'));
    let number = match nationcode {
        Some(code) if !mobile.starts_with('+') && !mobile.starts_with("00") => {
            if !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(item.bad(
                    "nationcode",
                    "expected the digits of a country code, like 86".to_owned(),
                ));
            }
            PhoneNumber::parse(&format!("+{code}{mobile}")).map_err(|e| e.to_string())
        }
        _ => normalise_number(&mobile),
    };
    number.map_err(|problem| item.bad_phone("mobile", problem))
}

/// `report_status`: `SUCCESS` or `FAIL`.
fn delivered(item: &Item<'_>) -> Result<bool, ReceiptError> {
    let status = item.required("report_status")?;
    if status.eq_ignore_ascii_case("SUCCESS") {
        Ok(true)
    } else if status.eq_ignore_ascii_case("FAIL") {
        Ok(false)
    } else {
        Err(item.bad(
            "report_status",
            format!("expected SUCCESS or FAIL, found {status:?}"),
        ))
    }
}

/// The answer that stops Tencent calling back again.
pub(super) fn acknowledgement() -> (&'static str, String) {
    (
        "application/json",
        r#"{"result":0,"errmsg":"OK"}"#.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn vendor() -> VendorId {
        VendorId::new("tencent").unwrap()
    }

    fn parse_str(body: &str) -> Result<Vec<DeliveryReport>, ReceiptError> {
        ReceiptFormat::Tencent.parse(&vendor(), body.as_bytes())
    }

    fn number(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s).unwrap()
    }

    #[test]
    fn a_delivered_receipt() {
        // The documented example, with a real number and serial number.
        let body = r#"[
          {
            "user_receive_time": "2015-10-17 08:03:04",
            "nationcode": "86",
            "mobile": "13800138000",
            "report_status": "SUCCESS",
            "errmsg": "DELIVRD",
            "description": "用户短信送达成功",
            "sid": "2019:6789012345678901234"
          }
        ]"#;
        assert_eq!(
            parse_str(body).unwrap(),
            vec![DeliveryReport {
                vendor: vendor(),
                vendor_message_id: "2019:6789012345678901234".to_owned(),
                recipient: number("+8613800138000"),
                delivered: true,
                code: Some("DELIVRD".to_owned()),
                description: Some("用户短信送达成功".to_owned()),
                reported_at: Some(Utc.with_ymd_and_hms(2015, 10, 17, 0, 3, 4).unwrap()),
                segments: None,
            }]
        );
    }

    #[test]
    fn a_failed_receipt_and_a_delivered_one_in_one_callback() {
        let body = r#"[
          {
            "user_receive_time": "2017-05-29 00:01:05",
            "nationcode": "852",
            "mobile": "61234567",
            "report_status": "FAIL",
            "errmsg": "MK:0001",
            "description": "号码状态异常",
            "sid": "sid-1",
            "fee": 1
          },
          {
            "user_receive_time": "2017-05-29 07:59:59",
            "nationcode": "86",
            "mobile": "13900000001",
            "report_status": "SUCCESS",
            "errmsg": "DELIVRD",
            "description": "用户短信送达成功",
            "sid": "sid-2"
          }
        ]"#;
        assert_eq!(
            parse_str(body).unwrap(),
            vec![
                DeliveryReport {
                    vendor: vendor(),
                    vendor_message_id: "sid-1".to_owned(),
                    recipient: number("+85261234567"),
                    delivered: false,
                    code: Some("MK:0001".to_owned()),
                    description: Some("号码状态异常".to_owned()),
                    reported_at: Some(Utc.with_ymd_and_hms(2017, 5, 28, 16, 1, 5).unwrap()),
                    segments: None,
                },
                DeliveryReport {
                    vendor: vendor(),
                    vendor_message_id: "sid-2".to_owned(),
                    recipient: number("+8613900000001"),
                    delivered: true,
                    code: Some("DELIVRD".to_owned()),
                    description: Some("用户短信送达成功".to_owned()),
                    reported_at: Some(Utc.with_ymd_and_hms(2017, 5, 28, 23, 59, 59).unwrap()),
                    segments: None,
                },
            ]
        );
    }

    #[test]
    fn numbers_without_a_nationcode_are_normalised() {
        let body = r#"[
          {"mobile":"13800138000","report_status":"SUCCESS","sid":"a"},
          {"mobile":"8613800138001","nationcode":"","report_status":"SUCCESS","sid":"b"},
          {"mobile":"+14155550100","nationcode":"86","report_status":"SUCCESS","sid":"c"},
          {"mobile":"13800138002","nationcode":"+86","report_status":"SUCCESS","sid":"d"}
        ]"#;
        let recipients: Vec<_> = parse_str(body)
            .unwrap()
            .into_iter()
            .map(|r| r.recipient)
            .collect();
        assert_eq!(
            recipients,
            vec![
                number("+8613800138000"),
                number("+8613800138001"),
                number("+14155550100"),
                number("+8613800138002"),
            ]
        );
    }

    #[test]
    fn a_bad_time_is_not_fatal() {
        let body = r#"[
          {"user_receive_time":"","mobile":"13800138000","report_status":"FAIL","sid":"a"},
          {"user_receive_time":"2015-10-17T08:03:04","mobile":"13800138000",
           "report_status":"FAIL","sid":"a"}
        ]"#;
        let reports = parse_str(body).unwrap();
        assert_eq!(reports[0].reported_at, None);
        assert_eq!(reports[1].reported_at, None);
    }

    #[test]
    fn a_missing_field_is_named() {
        let body = r#"[{"mobile":"13800138000","report_status":"SUCCESS"}]"#;
        let err = parse_str(body).unwrap_err();
        assert_eq!(
            err,
            ReceiptError::MissingField {
                format: ReceiptFormat::Tencent,
                index: 0,
                field: "sid"
            }
        );
        assert_eq!(
            err.to_string(),
            "tencent receipt item 0: missing field `sid`"
        );

        let body = r#"[{"mobile":"13800138000","report_status":"SUCCESS","sid":"a"},
                       {"nationcode":"86","report_status":"SUCCESS","sid":"b"}]"#;
        assert_eq!(
            parse_str(body).unwrap_err().to_string(),
            "tencent receipt item 1: missing field `mobile`"
        );
    }

    #[test]
    fn an_unknown_status_is_refused() {
        let body = r#"[{"mobile":"13800138000","report_status":"PENDING","sid":"a"}]"#;
        assert_eq!(
            parse_str(body).unwrap_err().to_string(),
            "tencent receipt item 0: field `report_status`: expected SUCCESS or FAIL, found \"PENDING\""
        );
    }

    #[test]
    fn a_bad_number_names_the_item() {
        let body = r#"[{"mobile":"13800138000","report_status":"SUCCESS","sid":"a"},
                       {"mobile":"12345","report_status":"SUCCESS","sid":"b"}]"#;
        let err = parse_str(body).unwrap_err();
        assert!(
            matches!(
                &err,
                ReceiptError::BadPhoneNumber {
                    index: 1,
                    field: "mobile",
                    ..
                }
            ),
            "{err:?}"
        );

        let body =
            r#"[{"mobile":"13800138000","nationcode":"8x","report_status":"SUCCESS","sid":"a"}]"#;
        assert_eq!(
            parse_str(body).unwrap_err().to_string(),
            "tencent receipt item 0: field `nationcode`: expected the digits of a country code, like 86"
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let err = parse_str("not json").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("tencent receipt: the body is not valid JSON: "),
            "{err}"
        );
        assert_eq!(
            parse_str(r#""SUCCESS""#).unwrap_err().to_string(),
            "tencent receipt: expected a JSON array of receipts, found a string"
        );
    }

    #[test]
    fn an_empty_callback_is_refused() {
        assert_eq!(
            parse_str("[]").unwrap_err(),
            ReceiptError::Empty {
                format: ReceiptFormat::Tencent
            }
        );
    }

    #[test]
    fn the_acknowledgement_is_the_documented_one() {
        let (content_type, body) = ReceiptFormat::Tencent.acknowledgement();
        assert_eq!(content_type, "application/json");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body, serde_json::json!({"result": 0, "errmsg": "OK"}));
    }
}
