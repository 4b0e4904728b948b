//! Cloopen (容联云通讯) status report, REST API 2013-12-26: one receipt per push, the
//! fields of a `Request` element with `action` `SMSArrived`. Like the rest of that API
//! it comes as JSON (`{"Request": {…}}`) or as XML (`<Request>…</Request>`); the first
//! byte that is not white space tells which (`{` or `<`). Every value is a string.
//!
//! | field | goes to |
//! | --- | --- |
//! | `action` | must be `SMSArrived`, else the push is [`ReceiptError::NotAReceipt`] |
//! | `smsType` | when present, must be `1` (a status report; `0` is a reply from a handset) |
//! | `content` | `vendor_message_id` (the send's `smsMessageSid`), required |
//! | `fromNum` | `recipient` (the number the message went to, despite the name), normalised, required |
//! | `status` | `delivered`: `0` is delivered, any other number is not; required |
//! | `deliverCode` | `code` (`DELIVRD`, or the carrier's code) |
//! | `recvTime` | `reported_at`, `yyyyMMddHHmmss`, Beijing time |
//! | `apiVersion`, `dateSent`, `reqId`, `smsCount`, `spCode` | not used |
//!
//! `reqId` is the sender's own id for the send, which this gateway does not set; the
//! push has no description, so `description` is `None`, and `smsCount` is not read as
//! the billed segments (its meaning is not documented), so `segments` is `None`. XML
//! elements nested inside a field are not a plain value and are ignored.
//!
//! The push is acknowledged with
//! `<?xml version='1.0' encoding='UTF-8'?><Response><statuscode>000000</statuscode></Response>`.

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use serde_json::{Map, Value};
use sms_core::{DeliveryReport, VendorId};

use super::{COMPACT_TIME, Item, ReceiptError, ReceiptFormat, json_kind};

const FORMAT: ReceiptFormat = ReceiptFormat::Cloopen;
/// The root element (XML) or member (JSON) holding the fields.
const ROOT: &str = "Request";

/// Reads a status report push.
pub(super) fn parse(vendor: &VendorId, body: &[u8]) -> Result<Vec<DeliveryReport>, ReceiptError> {
    let body = body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(body);
    let fields = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => json_fields(body)?,
        Some(b'<') => xml_fields(body)?,
        Some(_) => {
            return Err(shape(
                "expected a JSON object or an XML document".to_owned(),
            ));
        }
        None => return Err(ReceiptError::Empty { format: FORMAT }),
    };
    let item = Item::new(FORMAT, 0, &fields);

    let action = item.required("action")?;
    if action != "SMSArrived" {
        return Err(not_a_receipt(format!(
            "action is {action:?}, expected SMSArrived"
        )));
    }
    if let Some(kind) = item.text("smsType")? {
        if kind != "1" {
            return Err(not_a_receipt(format!(
                "smsType is {kind:?}; status reports have smsType 1"
            )));
        }
    }

    let vendor_message_id = item.required("content")?;
    let recipient = item.phone("fromNum")?;
    let status = item.required("status")?;
    if !status.bytes().all(|b| b.is_ascii_digit()) {
        return Err(item.bad(
            "status",
            format!("expected 0 (delivered) or another number, found {status:?}"),
        ));
    }
    Ok(vec![DeliveryReport {
        vendor: vendor.clone(),
        vendor_message_id,
        recipient,
        delivered: status.trim_start_matches('0').is_empty(),
        code: item.text("deliverCode")?,
        description: None,
        reported_at: item.time("recvTime", COMPACT_TIME)?,
        segments: None,
    }])
}

/// The answer that stops Cloopen pushing the report again.
pub(super) fn acknowledgement() -> (&'static str, String) {
    (
        "application/xml",
        "<?xml version='1.0' encoding='UTF-8'?><Response><statuscode>000000</statuscode></Response>"
            .to_owned(),
    )
}

fn shape(problem: String) -> ReceiptError {
    ReceiptError::Shape {
        format: FORMAT,
        problem,
    }
}

fn not_a_receipt(problem: String) -> ReceiptError {
    ReceiptError::NotAReceipt {
        format: FORMAT,
        problem,
    }
}

fn xml_error(detail: impl ToString) -> ReceiptError {
    ReceiptError::Xml {
        format: FORMAT,
        detail: detail.to_string(),
    }
}

/// The fields of `{"Request": {…}}`.
fn json_fields(body: &[u8]) -> Result<Map<String, Value>, ReceiptError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ReceiptError::Json {
        format: FORMAT,
        detail: e.to_string(),
    })?;
    let Value::Object(mut outer) = value else {
        return Err(shape(format!(
            "expected a JSON object with a `{ROOT}` object, found {}",
            json_kind(&value)
        )));
    };
    match outer.remove(ROOT) {
        Some(Value::Object(fields)) => Ok(fields),
        Some(other) => Err(shape(format!(
            "expected `{ROOT}` to be an object, found {}",
            json_kind(&other)
        ))),
        None => Err(shape(format!(
            "expected a JSON object with a `{ROOT}` object, found none"
        ))),
    }
}

/// The child elements of `<Request>`, each as a string: `<status>0</status>` becomes
/// `"status": "0"`.
fn xml_fields(body: &[u8]) -> Result<Map<String, Value>, ReceiptError> {
    let text = std::str::from_utf8(body).map_err(|e| xml_error(format!("not UTF-8: {e}")))?;
    let mut reader = Reader::from_str(text);
    let mut fields = Map::new();
    // How many elements are open: 1 inside <Request>, 2 inside one of its fields.
    let mut depth = 0usize;
    let mut seen_root = false;
    // The field being read (its name and text so far); `None` outside a field, or when
    // the field turned out to hold elements rather than text.
    let mut field: Option<(String, String)> = None;
    loop {
        match reader.read_event().map_err(xml_error)? {
            Event::Start(start) => {
                depth += 1;
                match depth {
                    1 => seen_root = check_root(&start, seen_root)?,
                    2 => field = Some((element_name(&start)?, String::new())),
                    _ => field = None,
                }
            }
            Event::Empty(start) => match depth {
                0 => seen_root = check_root(&start, seen_root)?,
                1 => {
                    fields.insert(element_name(&start)?, Value::String(String::new()));
                }
                _ => field = None,
            },
            Event::End(_) => {
                if depth == 2 {
                    if let Some((name, value)) = field.take() {
                        fields.insert(name, Value::String(value));
                    }
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(text) => {
                let text = text.decode().map_err(xml_error)?;
                if depth == 2 {
                    if let Some((_, value)) = field.as_mut() {
                        value.push_str(&text);
                    }
                } else if depth == 0 && !text.trim().is_empty() {
                    return Err(shape(format!("text outside the <{ROOT}> element")));
                }
            }
            Event::CData(data) => {
                if let (2, Some((_, value))) = (depth, field.as_mut()) {
                    value.push_str(&data.decode().map_err(xml_error)?);
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref().map_err(xml_error)? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = reference.decode().map_err(xml_error)?;
                        resolve_predefined_entity(&name)
                            .ok_or_else(|| xml_error(format!("unknown entity &{name};")))?
                            .to_owned()
                    }
                };
                if let (2, Some((_, value))) = (depth, field.as_mut()) {
                    value.push_str(&resolved);
                }
            }
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if depth != 0 {
        return Err(xml_error(format!("the document ends inside <{ROOT}>")));
    }
    if !seen_root {
        return Err(shape(format!("expected a <{ROOT}> element, found none")));
    }
    Ok(fields)
}

/// Checks that an element at the top is the one `<Request>`; returns that it was seen.
fn check_root(start: &BytesStart<'_>, seen_root: bool) -> Result<bool, ReceiptError> {
    let name = element_name(start)?;
    if seen_root {
        return Err(shape(format!(
            "expected one <{ROOT}> element, found another element <{name}> after it"
        )));
    }
    if name != ROOT {
        return Err(shape(format!(
            "expected a <{ROOT}> element, found <{name}>"
        )));
    }
    Ok(true)
}

/// An element's name without a namespace prefix.
fn element_name(start: &BytesStart<'_>) -> Result<String, ReceiptError> {
    std::str::from_utf8(start.local_name().as_ref())
        .map(str::to_owned)
        .map_err(|e| xml_error(format!("element name is not UTF-8: {e}")))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use sms_core::PhoneNumber;

    use super::*;

    fn vendor() -> VendorId {
        VendorId::new("cloopen").unwrap()
    }

    fn parse_str(body: &str) -> Result<Vec<DeliveryReport>, ReceiptError> {
        ReceiptFormat::Cloopen.parse(&vendor(), body.as_bytes())
    }

    /// The documented JSON example: a delivered receipt.
    const DELIVERED_JSON: &str = r#"{
      "Request": {
        "action": "SMSArrived",
        "smsType": "1",
        "apiVersion": "2013-12-26",
        "content": "4121908f3d1b4edb9210f0eb4742f62c",
        "fromNum": "13912345678",
        "dateSent": "20130923010000",
        "deliverCode": "DELIVRD",
        "recvTime": "20130923010010",
        "status": "0",
        "reqId": "123",
        "smsCount": "2",
        "spCode": "10690876"
      }
    }"#;

    /// The same fields as XML, for a message that was not delivered.
    const FAILED_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
        <Request>\n\
          <action>SMSArrived</action>\n\
          <smsType>1</smsType>\n\
          <apiVersion>2013-12-26</apiVersion>\n\
          <content>ff8080813c373cab013c94b0f0512345</content>\n\
          <fromNum>8613800138000</fromNum>\n\
          <dateSent>20130201155306</dateSent>\n\
          <deliverCode>MK:0001</deliverCode>\n\
          <recvTime>20130201155320</recvTime>\n\
          <status>1</status>\n\
          <reqId></reqId>\n\
        </Request>\n";

    #[test]
    fn a_delivered_receipt_as_json() {
        assert_eq!(
            parse_str(DELIVERED_JSON).unwrap(),
            vec![DeliveryReport {
                vendor: vendor(),
                vendor_message_id: "4121908f3d1b4edb9210f0eb4742f62c".to_owned(),
                recipient: PhoneNumber::parse("+8613912345678").unwrap(),
                delivered: true,
                code: Some("DELIVRD".to_owned()),
                description: None,
                reported_at: Some(Utc.with_ymd_and_hms(2013, 9, 22, 17, 0, 10).unwrap()),
                segments: None,
            }]
        );
    }

    #[test]
    fn a_failed_receipt_as_xml() {
        assert_eq!(
            parse_str(FAILED_XML).unwrap(),
            vec![DeliveryReport {
                vendor: vendor(),
                vendor_message_id: "ff8080813c373cab013c94b0f0512345".to_owned(),
                recipient: PhoneNumber::parse("+8613800138000").unwrap(),
                delivered: false,
                code: Some("MK:0001".to_owned()),
                description: None,
                reported_at: Some(Utc.with_ymd_and_hms(2013, 2, 1, 7, 53, 20).unwrap()),
                segments: None,
            }]
        );
    }

    #[test]
    fn xml_text_is_unescaped_and_comments_and_nested_elements_are_skipped() {
        let body = "\u{feff}  <Request xmlns:c=\"urn:x\"><!-- pushed -->\
            <c:action>SMSArrived</c:action>\
            <content><![CDATA[a&b]]>&#x31;&amp;2</content>\
            <fromNum> +852 6123 4567 </fromNum>\
            <deliverCode/>\
            <extra><nested>1</nested></extra>\
            <status>00</status>\
            <recvTime>not a time</recvTime>\
            </Request>";
        let reports = parse_str(body).unwrap();
        assert_eq!(reports.len(), 1);
        let report = &reports[0];
        assert_eq!(report.vendor_message_id, "a&b1&2");
        assert_eq!(report.recipient.as_str(), "+85261234567");
        assert!(report.delivered);
        assert_eq!(report.code, None);
        assert_eq!(report.reported_at, None);
    }

    #[test]
    fn replies_from_handsets_and_other_actions_are_not_receipts() {
        let reply = DELIVERED_JSON.replace(r#""smsType": "1""#, r#""smsType": "0""#);
        let err = parse_str(&reply).unwrap_err();
        assert!(matches!(err, ReceiptError::NotAReceipt { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "cloopen push is not a delivery receipt: smsType is \"0\"; status reports have smsType 1"
        );

        let other = FAILED_XML.replace(">SMSArrived<", ">CallAuth<");
        assert_eq!(
            parse_str(&other).unwrap_err().to_string(),
            "cloopen push is not a delivery receipt: action is \"CallAuth\", expected SMSArrived"
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let body = DELIVERED_JSON.replace(r#""content": "4121908f3d1b4edb9210f0eb4742f62c","#, "");
        let err = parse_str(&body).unwrap_err();
        assert_eq!(
            err,
            ReceiptError::MissingField {
                format: ReceiptFormat::Cloopen,
                index: 0,
                field: "content"
            }
        );
        assert_eq!(
            err.to_string(),
            "cloopen receipt item 0: missing field `content`"
        );

        let body = FAILED_XML.replace("<status>1</status>", "<status/>");
        assert_eq!(
            parse_str(&body).unwrap_err().to_string(),
            "cloopen receipt item 0: missing field `status`"
        );

        assert_eq!(
            parse_str(r#"{"Request": {}}"#).unwrap_err().to_string(),
            "cloopen receipt item 0: missing field `action`"
        );
    }

    #[test]
    fn a_bad_number_or_status_is_named() {
        let body = FAILED_XML.replace("8613800138000", "10086");
        let err = parse_str(&body).unwrap_err();
        assert!(
            matches!(
                &err,
                ReceiptError::BadPhoneNumber {
                    index: 0,
                    field: "fromNum",
                    ..
                }
            ),
            "{err:?}"
        );

        let body = FAILED_XML.replace("<status>1</status>", "<status>failed</status>");
        assert_eq!(
            parse_str(&body).unwrap_err().to_string(),
            "cloopen receipt item 0: field `status`: expected 0 (delivered) or another number, found \"failed\""
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let err = parse_str("<Request><action>SMSArrived</Request>").unwrap_err();
        assert!(matches!(err, ReceiptError::Xml { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("cloopen receipt: the body is not valid XML: "),
            "{err}"
        );

        let err = parse_str("<Request><action>SMSArrived</action>").unwrap_err();
        assert!(matches!(err, ReceiptError::Xml { .. }), "{err:?}");

        let err = parse_str(r#"{"Request": {"action": "SMSArrived",}}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cloopen receipt: the body is not valid JSON: "),
            "{err}"
        );

        let cases = [
            (
                "<Response><statuscode>000000</statuscode></Response>",
                "expected a <Request> element, found <Response>",
            ),
            (
                "<?xml version=\"1.0\"?><!-- nothing -->",
                "expected a <Request> element, found none",
            ),
            (
                "<Request/><Request/>",
                "expected one <Request> element, found another element <Request> after it",
            ),
            (
                r#"{"action": "SMSArrived"}"#,
                "expected a JSON object with a `Request` object, found none",
            ),
            (
                r#"{"Request": [1]}"#,
                "expected `Request` to be an object, found an array",
            ),
            (
                r#"[{"Request": {}}]"#,
                "expected a JSON object or an XML document",
            ),
            (
                "action=SMSArrived",
                "expected a JSON object or an XML document",
            ),
        ];
        for (body, problem) in cases {
            assert_eq!(
                parse_str(body).unwrap_err().to_string(),
                format!("cloopen receipt: {problem}"),
                "{body}"
            );
        }
    }

    #[test]
    fn an_empty_push_is_refused() {
        assert_eq!(
            parse_str(" \n ").unwrap_err(),
            ReceiptError::Empty {
                format: ReceiptFormat::Cloopen
            }
        );
    }

    #[test]
    fn the_acknowledgement_is_the_documented_one() {
        assert_eq!(
            ReceiptFormat::Cloopen.acknowledgement(),
            (
                "application/xml",
                "<?xml version='1.0' encoding='UTF-8'?><Response><statuscode>000000</statuscode></Response>"
                    .to_owned()
            )
        );
    }
}
