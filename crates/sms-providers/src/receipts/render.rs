//! Receipt pushes written the way each vendor writes them, for the sandbox (and tests)
//! to push what the real vendors would. [`ReceiptFormat::parse`] reads each back.

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Value, json};
use sms_core::{DeliveryReport, PhoneNumber};

use super::ReceiptFormat;

impl ReceiptFormat {
    /// The bodies a vendor pushes for `reports`, all sent as `application/json`: one
    /// array for Aliyun and Tencent, one body per report for Cloopen.
    pub fn render(self, reports: &[DeliveryReport]) -> Vec<String> {
        match self {
            Self::Aliyun => vec![Value::Array(reports.iter().map(aliyun).collect()).to_string()],
            Self::Tencent => vec![Value::Array(reports.iter().map(tencent).collect()).to_string()],
            Self::Cloopen => reports.iter().map(|r| cloopen(r).to_string()).collect(),
        }
    }
}

/// The number as vendors in China write it: without `+86` for a mainland number.
fn national(number: &PhoneNumber) -> &str {
    number
        .as_str()
        .strip_prefix("+86")
        .unwrap_or(number.digits())
}

/// A time as these vendors write it, in Beijing time.
fn beijing(at: Option<DateTime<Utc>>, format: &str) -> String {
    let offset = FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
    at.unwrap_or_else(Utc::now)
        .with_timezone(&offset)
        .format(format)
        .to_string()
}

fn code(r: &DeliveryReport, delivered: &str, undelivered: &str) -> String {
    r.code
        .clone()
        .unwrap_or_else(|| if r.delivered { delivered } else { undelivered }.to_owned())
}

fn aliyun(r: &DeliveryReport) -> Value {
    let time = beijing(r.reported_at, "%Y-%m-%d %H:%M:%S");
    json!({
        "phone_number": national(&r.recipient),
        "send_time": time,
        "report_time": time,
        "success": r.delivered,
        "err_code": code(r, "DELIVERED", "UNDELIV"),
        "err_msg": r.description.clone().unwrap_or_else(|| {
            if r.delivered { "用户接收成功" } else { "用户接收失败" }.to_owned()
        }),
        "sms_size": r.segments.unwrap_or(1).to_string(),
        "biz_id": r.vendor_message_id,
        "out_id": "",
    })
}

fn tencent(r: &DeliveryReport) -> Value {
    let (nationcode, mobile) = match r.recipient.as_str().strip_prefix("+86") {
        Some(mobile) => ("86", mobile),
        None => ("", r.recipient.digits()),
    };
    json!({
        "user_receive_time": beijing(r.reported_at, "%Y-%m-%d %H:%M:%S"),
        "nationcode": nationcode,
        "mobile": mobile,
        "report_status": if r.delivered { "SUCCESS" } else { "FAIL" },
        "errmsg": code(r, "DELIVRD", "UNDELIV"),
        "description": r.description.clone().unwrap_or_else(|| {
            if r.delivered { "用户短信送达成功" } else { "用户短信未送达" }.to_owned()
        }),
        "sid": r.vendor_message_id,
    })
}

fn cloopen(r: &DeliveryReport) -> Value {
    let time = beijing(r.reported_at, "%Y%m%d%H%M%S");
    json!({"Request": {
        "action": "SMSArrived",
        "smsType": "1",
        "apiVersion": "2013-12-26",
        "content": r.vendor_message_id,
        "fromNum": national(&r.recipient),
        "dateSent": time,
        "deliverCode": code(r, "DELIVRD", "UNDELIV"),
        "recvTime": time,
        "status": if r.delivered { "0" } else { "1" },
        "reqId": "",
    }})
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use sms_core::VendorId;

    use super::*;

    fn report(vendor: &str, number: &str, delivered: bool) -> DeliveryReport {
        DeliveryReport {
            vendor: VendorId::new(vendor).unwrap(),
            vendor_message_id: "id-1".into(),
            recipient: PhoneNumber::parse(number).unwrap(),
            delivered,
            code: Some(if delivered { "DELIVRD" } else { "MK:0001" }.into()),
            description: Some("words".into()),
            reported_at: Some(Utc.with_ymd_and_hms(2026, 12, 5, 2, 3, 4).unwrap()),
            segments: None,
        }
    }

    #[test]
    fn each_vendors_push_reads_back_as_the_reports_it_was_written_from() {
        for format in ReceiptFormat::ALL {
            let vendor = VendorId::new(format.as_str()).unwrap();
            let reports = vec![
                report(format.as_str(), "+8613800000001", true),
                report(format.as_str(), "+8613800000002", false),
            ];
            let read: Vec<DeliveryReport> = format
                .render(&reports)
                .iter()
                .flat_map(|body| format.parse(&vendor, body.as_bytes()).unwrap())
                .collect();
            assert_eq!(read.len(), 2, "{format}");
            for (got, sent) in read.iter().zip(&reports) {
                assert_eq!(got.vendor_message_id, sent.vendor_message_id, "{format}");
                assert_eq!(got.recipient, sent.recipient, "{format}");
                assert_eq!(got.delivered, sent.delivered, "{format}");
                assert_eq!(got.code, sent.code, "{format}");
                assert_eq!(got.reported_at, sent.reported_at, "{format}");
            }
        }
        // Cloopen pushes one report per body.
        let two = vec![report("cloopen", "+8613800000001", true); 2];
        assert_eq!(ReceiptFormat::Cloopen.render(&two).len(), 2);
    }
}
