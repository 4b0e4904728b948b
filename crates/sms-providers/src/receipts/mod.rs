//! Delivery receipts ("status reports") that the vendors push to the gateway, read into
//! [`DeliveryReport`](sms_core::DeliveryReport)s, and the answer each vendor expects.
//!
//! Each vendor posts its own format to an endpoint of its own. The endpoint knows which
//! vendor it serves (the [`VendorId`](sms_core::VendorId) comes from there, never from
//! the body) and which [`ReceiptFormat`](crate::receipts::ReceiptFormat) it speaks:
//!
//! - [`Aliyun`](crate::receipts::ReceiptFormat::Aliyun): SmsReport, a JSON array of
//!   receipts.
//! - [`Tencent`](crate::receipts::ReceiptFormat::Tencent): the SMS status callback, a
//!   JSON array of receipts.
//! - [`Cloopen`](crate::receipts::ReceiptFormat::Cloopen): the `SMSArrived` status
//!   report, one receipt per push, as JSON or XML.
//!
//! What every format shares:
//!
//! - Numbers are normalised to E.164: one starting with `+` or `00` is taken as it is,
//!   an 11-digit number starting with `1` is a mainland Chinese mobile (`+86` is put in
//!   front), and 13 digits starting with `86` get a `+`. Anything else is refused, naming
//!   the item.
//! - Times are Beijing time (UTC+8) and are converted to UTC. A time that cannot be read
//!   only leaves [`reported_at`](sms_core::DeliveryReport::reported_at) empty.
//! - A body that is not the documented shape, an item without a field the format needs,
//!   or a push with no receipt in it is a [`ReceiptError`](crate::receipts::ReceiptError)
//!   (the endpoint answers 400). Items are counted from 0 in error messages.
//!
//! Once the receipts are stored, the endpoint answers with
//! [`ReceiptFormat::acknowledgement`](crate::receipts::ReceiptFormat::acknowledgement),
//! so that the vendor does not push them again.

mod aliyun;
mod cloopen;
mod render;
mod tencent;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use sms_core::{DeliveryReport, PhoneNumber, VendorId};

use crate::rules::Protocol;

/// Which vendor's receipt format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptFormat {
    /// Aliyun SmsReport (HTTP batch push): a JSON array.
    Aliyun,
    /// Tencent Cloud SMS status callback: a JSON array.
    Tencent,
    /// Cloopen (容联云通讯) `SMSArrived` status report: one per push, JSON or XML.
    Cloopen,
}

impl ReceiptFormat {
    /// Every format, in a fixed order.
    pub const ALL: [ReceiptFormat; 3] = [Self::Aliyun, Self::Tencent, Self::Cloopen];

    /// The lower-case name, as [`FromStr`] accepts it (`aliyun`, `tencent`, `cloopen`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aliyun => "aliyun",
            Self::Tencent => "tencent",
            Self::Cloopen => "cloopen",
        }
    }

    /// Reads the receipts of one push from `vendor`, in the order the body lists them.
    ///
    /// At least one receipt comes back; an empty push, a body that is not this format's
    /// shape, a missing field or a number that cannot be read is an error.
    pub fn parse(
        self,
        vendor: &VendorId,
        body: &[u8],
    ) -> Result<Vec<DeliveryReport>, ReceiptError> {
        match self {
            Self::Aliyun => aliyun::parse(vendor, body),
            Self::Tencent => tencent::parse(vendor, body),
            Self::Cloopen => cloopen::parse(vendor, body),
        }
    }

    /// The answer the vendor expects for a receipt it should not send again: (content
    /// type, body).
    pub fn acknowledgement(self) -> (&'static str, String) {
        match self {
            Self::Aliyun => aliyun::acknowledgement(),
            Self::Tencent => tencent::acknowledgement(),
            Self::Cloopen => cloopen::acknowledgement(),
        }
    }
}

/// The receipts a vendor speaking `protocol` pushes.
impl From<Protocol> for ReceiptFormat {
    fn from(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Aliyun => Self::Aliyun,
            Protocol::Tencent => Self::Tencent,
            Protocol::Cloopen => Self::Cloopen,
        }
    }
}

impl fmt::Display for ReceiptFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReceiptFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|format| format.as_str() == s)
            .ok_or_else(|| {
                format!("unknown receipt format {s:?}; expected aliyun, tencent or cloopen")
            })
    }
}

/// Why a vendor's push was refused. The message names the format, the item (counting
/// from 0) and the field, and says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The body is not JSON.
    #[error("{format} receipt: the body is not valid JSON: {detail}")]
    Json {
        /// The format expected.
        format: ReceiptFormat,
        /// The JSON parser's words, with the position.
        detail: String,
    },
    /// The body is not well-formed XML.
    #[error("{format} receipt: the body is not valid XML: {detail}")]
    Xml {
        /// The format expected.
        format: ReceiptFormat,
        /// What was wrong.
        detail: String,
    },
    /// The body parses, but is not the shape the vendor documents (an object where an
    /// array belongs, another root element, …).
    #[error("{format} receipt: {problem}")]
    Shape {
        /// The format expected.
        format: ReceiptFormat,
        /// What was expected, and what was found.
        problem: String,
    },
    /// A well-formed push with no receipt in it.
    #[error("{format} receipt: no receipts in the body")]
    Empty {
        /// The format expected.
        format: ReceiptFormat,
    },
    /// An item lacks a field the format needs (absent, null or empty).
    #[error("{format} receipt item {index}: missing field `{field}`")]
    MissingField {
        /// The format expected.
        format: ReceiptFormat,
        /// The item's position in the push, from 0.
        index: usize,
        /// The field, as the vendor names it.
        field: &'static str,
    },
    /// A field holds something other than what the format documents.
    #[error("{format} receipt item {index}: field `{field}`: {problem}")]
    BadField {
        /// The format expected.
        format: ReceiptFormat,
        /// The item's position in the push, from 0.
        index: usize,
        /// The field, as the vendor names it.
        field: &'static str,
        /// What was expected, and what was found.
        problem: String,
    },
    /// An item's number cannot be read as a phone number.
    #[error(
        "{format} receipt item {index}: field `{field}` is not a usable phone number: {problem}"
    )]
    BadPhoneNumber {
        /// The format expected.
        format: ReceiptFormat,
        /// The item's position in the push, from 0.
        index: usize,
        /// The field holding the number, as the vendor names it.
        field: &'static str,
        /// What was wrong (the number itself is left out: it may end up in logs).
        problem: String,
    },
    /// A push to the receipt endpoint that is something else (Cloopen sends replies
    /// from handsets with `smsType` 0, for instance).
    #[error("{format} push is not a delivery receipt: {problem}")]
    NotAReceipt {
        /// The format expected.
        format: ReceiptFormat,
        /// What the push is.
        problem: String,
    },
}

/// The format of the vendors' Beijing times with separators: `2017-05-29 00:01:05`.
pub(crate) const DASHED_TIME: &str = "%Y-%m-%d %H:%M:%S";
/// The format of Cloopen's Beijing times: `20130201155306`.
const COMPACT_TIME: &str = "%Y%m%d%H%M%S";

/// Reads a Beijing time (UTC+8) written in `format`; `None` when it cannot be read.
pub(crate) fn beijing_time(text: &str, format: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(text.trim(), format).ok()?;
    let beijing = FixedOffset::east_opt(8 * 3600)?;
    naive
        .and_local_timezone(beijing)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// Normalises a number as the vendors write it to E.164: one starting with `+` or `00`
/// is parsed as it is; an 11-digit number starting with `1` is a mainland Chinese mobile
/// (`+86` is put in front); 13 digits starting with `86` get a `+`. The error says what
/// was expected.
fn normalise_number(raw: &str) -> Result<PhoneNumber, String> {
    let number = raw.trim();
    if number.starts_with('+') || number.starts_with("00") {
        return PhoneNumber::parse(number).map_err(|e| e.to_string());
    }
    let all_digits = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
    let international = if all_digits && number.len() == 11 && number.starts_with('1') {
        format!("+86{number}")
    } else if all_digits && number.len() == 13 && number.starts_with("86") {
        format!("+{number}")
    } else {
        return Err(format!(
            "expected a number starting with + or 00, 11 digits starting with 1 (a Chinese \
             mobile) or 13 digits starting with 86; found {}",
            describe_number(number)
        ));
    };
    PhoneNumber::parse(&international).map_err(|e| e.to_string())
}

/// What a refused number looks like, without its digits.
fn describe_number(number: &str) -> String {
    if number.is_empty() {
        return "an empty value".to_owned();
    }
    let digits = number.chars().filter(char::is_ascii_digit).count();
    let others = number.chars().count() - digits;
    match others {
        0 => format!("{digits} digits"),
        _ => format!("{digits} digits and {others} other characters"),
    }
}

/// What kind of JSON value `value` is, for error messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a body that must be a non-empty JSON array of objects (Aliyun, Tencent).
fn json_objects(
    format: ReceiptFormat,
    body: &[u8],
) -> Result<Vec<Map<String, Value>>, ReceiptError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ReceiptError::Json {
        format,
        detail: e.to_string(),
    })?;
    let Value::Array(items) = value else {
        return Err(ReceiptError::Shape {
            format,
            problem: format!(
                "expected a JSON array of receipts, found {}",
                json_kind(&value)
            ),
        });
    };
    if items.is_empty() {
        return Err(ReceiptError::Empty { format });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::Object(fields) => Ok(fields),
            other => Err(ReceiptError::Shape {
                format,
                problem: format!(
                    "item {index}: expected an object, found {}",
                    json_kind(&other)
                ),
            }),
        })
        .collect()
}

/// One receipt of a push: its fields, and where it stands, to name it in errors.
struct Item<'a> {
    format: ReceiptFormat,
    index: usize,
    fields: &'a Map<String, Value>,
}

impl<'a> Item<'a> {
    fn new(format: ReceiptFormat, index: usize, fields: &'a Map<String, Value>) -> Self {
        Self {
            format,
            index,
            fields,
        }
    }

    /// The field as text: a string (trimmed) or a number. Absent, null or empty is
    /// `None`; any other kind of value is an error.
    fn text(&self, field: &'static str) -> Result<Option<String>, ReceiptError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let s = s.trim();
                Ok((!s.is_empty()).then(|| s.to_owned()))
            }
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(self.bad(
                field,
                format!("expected a string, found {}", json_kind(other)),
            )),
        }
    }

    /// The field as text; absent, null or empty is an error naming it.
    fn required(&self, field: &'static str) -> Result<String, ReceiptError> {
        self.text(field)?.ok_or(ReceiptError::MissingField {
            format: self.format,
            index: self.index,
            field,
        })
    }

    /// The field as a boolean: `true`/`false`, or the strings `"true"`/`"false"`.
    fn required_bool(&self, field: &'static str) -> Result<bool, ReceiptError> {
        match self.fields.get(field) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
            None | Some(Value::Null) => Err(ReceiptError::MissingField {
                format: self.format,
                index: self.index,
                field,
            }),
            Some(Value::String(s)) if s.trim().is_empty() => Err(ReceiptError::MissingField {
                format: self.format,
                index: self.index,
                field,
            }),
            Some(other) => Err(self.bad(
                field,
                format!("expected true or false, found {}", json_kind(other)),
            )),
        }
    }

    /// The field as a count: a whole number, or a string holding one. Anything else is
    /// `None` (a count is a billing hint, not worth refusing a receipt for).
    fn count(&self, field: &'static str) -> Option<u32> {
        match self.fields.get(field)? {
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The field as a Beijing time in `format`; `None` when absent or unreadable.
    fn time(
        &self,
        field: &'static str,
        format: &str,
    ) -> Result<Option<DateTime<Utc>>, ReceiptError> {
        Ok(self
            .text(field)?
            .and_then(|text| beijing_time(&text, format)))
    }

    /// The field as a phone number, normalised ([`normalise_number`]).
    fn phone(&self, field: &'static str) -> Result<PhoneNumber, ReceiptError> {
        let raw = self.required(field)?;
        normalise_number(&raw).map_err(|problem| self.bad_phone(field, problem))
    }

    fn bad(&self, field: &'static str, problem: String) -> ReceiptError {
        ReceiptError::BadField {
            format: self.format,
            index: self.index,
            field,
            problem,
        }
    }

    fn bad_phone(&self, field: &'static str, problem: String) -> ReceiptError {
        ReceiptError::BadPhoneNumber {
            format: self.format,
            index: self.index,
            field,
            problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn number(raw: &str) -> String {
        normalise_number(raw).unwrap().as_str().to_owned()
    }

    #[test]
    fn chinese_mobiles_without_a_country_code_get_plus_86() {
        assert_eq!(number("13800138000"), "+8613800138000");
        assert_eq!(number(" 19912345678 "), "+8619912345678");
    }

    #[test]
    fn numbers_with_86_in_front_get_a_plus() {
        assert_eq!(number("8613800138000"), "+8613800138000");
    }

    #[test]
    fn international_numbers_are_taken_as_they_are() {
        assert_eq!(number("+8613800138000"), "+8613800138000");
        assert_eq!(number("008613800138000"), "+8613800138000");
        assert_eq!(number("+1 415 555 0100"), "+14155550100");
        assert_eq!(number("0085261234567"), "+85261234567");
    }

    #[test]
    fn other_numbers_are_refused_without_showing_them() {
        for (raw, found) in [
            ("1380013800", "10 digits"),
            ("23800138000", "11 digits"),
            ("861380013800", "12 digits"),
            ("1381111****", "7 digits and 4 other characters"),
            ("", "an empty value"),
        ] {
            let problem = normalise_number(raw).unwrap_err();
            assert!(
                problem.ends_with(&format!("found {found}")),
                "{raw:?}: {problem}"
            );
        }
        let problem = normalise_number("+86abc").unwrap_err();
        assert!(problem.contains("unexpected character 'a'"), "{problem}");
    }

    #[test]
    fn beijing_times_become_utc() {
        assert_eq!(
            beijing_time("2017-05-29 00:01:05", DASHED_TIME),
            Some(Utc.with_ymd_and_hms(2017, 5, 28, 16, 1, 5).unwrap())
        );
        assert_eq!(
            beijing_time("20130201155306", COMPACT_TIME),
            Some(Utc.with_ymd_and_hms(2013, 2, 1, 7, 53, 6).unwrap())
        );
        assert_eq!(beijing_time("2017-05-29", DASHED_TIME), None);
        assert_eq!(beijing_time("2017-13-29 00:01:05", DASHED_TIME), None);
        assert_eq!(beijing_time("yesterday", COMPACT_TIME), None);
    }

    #[test]
    fn formats_parse_from_their_names() {
        assert_eq!("aliyun".parse(), Ok(ReceiptFormat::Aliyun));
        assert_eq!("tencent".parse(), Ok(ReceiptFormat::Tencent));
        assert_eq!("cloopen".parse(), Ok(ReceiptFormat::Cloopen));
        for format in ReceiptFormat::ALL {
            assert_eq!(format.to_string().parse(), Ok(format));
        }
        assert_eq!(
            "Aliyun".parse::<ReceiptFormat>(),
            Err(
                "unknown receipt format \"Aliyun\"; expected aliyun, tencent or cloopen".to_owned()
            )
        );
    }

    #[test]
    fn a_body_that_is_not_an_array_of_objects_is_refused() {
        let err = json_objects(ReceiptFormat::Aliyun, br#"{"biz_id":"1"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "aliyun receipt: expected a JSON array of receipts, found an object"
        );
        let err = json_objects(ReceiptFormat::Tencent, br#"[{}, 3]"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tencent receipt: item 1: expected an object, found a number"
        );
    }

    #[test]
    fn fields_are_read_leniently_but_wrong_kinds_are_named() {
        let fields = serde_json::json!({
            "s": " text ", "n": 12, "empty": "  ", "null": null, "list": [1],
            "yes": "TRUE", "no": false, "size": "2", "size_n": 3, "size_bad": "two",
        });
        let fields = fields.as_object().unwrap();
        let item = Item::new(ReceiptFormat::Aliyun, 4, fields);
        assert_eq!(item.text("s"), Ok(Some("text".to_owned())));
        assert_eq!(item.text("n"), Ok(Some("12".to_owned())));
        assert_eq!(item.text("empty"), Ok(None));
        assert_eq!(item.text("null"), Ok(None));
        assert_eq!(item.text("absent"), Ok(None));
        assert_eq!(
            item.text("list").unwrap_err().to_string(),
            "aliyun receipt item 4: field `list`: expected a string, found an array"
        );
        assert_eq!(
            item.required("empty").unwrap_err().to_string(),
            "aliyun receipt item 4: missing field `empty`"
        );
        assert_eq!(item.required_bool("yes"), Ok(true));
        assert_eq!(item.required_bool("no"), Ok(false));
        assert_eq!(
            item.required_bool("n").unwrap_err().to_string(),
            "aliyun receipt item 4: field `n`: expected true or false, found a number"
        );
        assert_eq!(item.count("size"), Some(2));
        assert_eq!(item.count("size_n"), Some(3));
        assert_eq!(item.count("size_bad"), None);
        assert_eq!(item.count("absent"), None);
    }
}
