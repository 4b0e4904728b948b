//! Identifiers: messages, vendors, templates, idempotency keys.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::phone::truncate_for_error;

thread_local! {
    // uuid's shared context is one mutex for the whole process, taken for every id; a
    // context per thread keeps ids off each other's cache lines.
    static CONTEXT: uuid::ContextV7 = const { uuid::ContextV7::new() };
}

/// A message's id: a UUID v7, so ids sort by creation time and index well.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(uuid::Uuid);

impl MessageId {
    /// A new, time-ordered id: ids made on one thread increase strictly; ids made on
    /// different threads are ordered by their millisecond.
    pub fn new() -> Self {
        Self(CONTEXT.with(|context| uuid::Uuid::new_v7(uuid::Timestamp::now(context))))
    }

    /// As [`MessageId::new`], for a message made at `time` (a time the caller has read
    /// already: one clock reading fewer). Times before 1970 count as 1970.
    pub fn at(time: chrono::DateTime<chrono::Utc>) -> Self {
        let (seconds, nanos) = match u64::try_from(time.timestamp()) {
            // Below 1e9 even in a leap second, as uuid expects.
            Ok(seconds) => (seconds, time.timestamp_subsec_nanos().min(999_999_999)),
            Err(_) => (0, 0),
        };
        Self(CONTEXT.with(|context| {
            uuid::Uuid::new_v7(uuid::Timestamp::from_unix(context, seconds, nanos))
        }))
    }

    /// Wraps an existing UUID (read back from storage).
    pub const fn from_uuid(uuid: uuid::Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID.
    pub const fn as_uuid(&self) -> &uuid::Uuid {
        &self.0
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

impl std::str::FromStr for MessageId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self).map_err(|_| {
            ValidationError::new(
                "id",
                format!("expected a UUID, found {:?}", truncate_for_error(s)),
            )
        })
    }
}

/// Checks a short identifier: 1 to `max` characters of ASCII letters, digits, `_`, `-`, `.`.
fn check_identifier(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("expected at most {max} characters, found {}", value.len()),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(ValidationError::new(
            field,
            format!(
                "unexpected character {c:?} in {:?}; use letters, digits, '_', '-' and '.'",
                truncate_for_error(value)
            ),
        ));
    }
    Ok(())
}

/// A vendor's name as configured (`aliyun`, `tencent`, `cloopen`, …).
///
/// Held inline (at most [`VendorId::MAX_LEN`] ASCII bytes), so a clone is a plain copy:
/// no allocation, and no shared reference count for threads sending through the same
/// vendor to contend on.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VendorId {
    len: u8,
    bytes: [u8; VendorId::MAX_LEN],
}

impl VendorId {
    /// Longest vendor name accepted.
    pub const MAX_LEN: usize = 32;

    /// Validates a vendor name: lower-case letters, digits, `_` and `-`.
    pub fn new(name: &str) -> Result<Self, ValidationError> {
        check_identifier("vendor", name, Self::MAX_LEN)?;
        if name.chars().any(|c| c.is_ascii_uppercase() || c == '.') {
            return Err(ValidationError::new(
                "vendor",
                format!("expected lower-case letters, digits, '_' or '-', found {name:?}"),
            ));
        }
        let mut bytes = [0; Self::MAX_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(Self {
            // At most MAX_LEN (checked above), so it fits.
            len: name.len() as u8,
            bytes,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters, digits, '_' and '-' get in (checked in `new`).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)])
            .expect("a vendor id holds ASCII only")
    }
}

impl PartialEq for VendorId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for VendorId {}

impl std::hash::Hash for VendorId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for VendorId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for VendorId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for VendorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for VendorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VendorId({})", self.as_str())
    }
}

impl TryFrom<String> for VendorId {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<VendorId> for String {
    fn from(value: VendorId) -> Self {
        value.as_str().to_owned()
    }
}

/// A template's id at the vendor, e.g. `SMS_123456` or `login_code`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TemplateId(String);

impl TemplateId {
    /// Longest template id accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates a template id.
    pub fn new(value: &str) -> Result<Self, ValidationError> {
        check_identifier("template", value, Self::MAX_LEN)?;
        Ok(Self(value.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TemplateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TemplateId {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<TemplateId> for String {
    fn from(value: TemplateId) -> Self {
        value.0
    }
}

/// A named client of the gateway (`shop`, `auth-service`): lower-case letters, digits,
/// `_` and `-`, at most 64 characters. Messages record it; quotas and spend caps are
/// kept per client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

impl ClientId {
    /// Longest client name accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates a client name.
    pub fn new(value: &str) -> Result<Self, ValidationError> {
        const FIELD: &str = "client";
        if value.is_empty() {
            return Err(ValidationError::new(FIELD, "must not be empty"));
        }
        if value.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                FIELD,
                format!(
                    "expected at most {} characters, found {}",
                    Self::MAX_LEN,
                    value.len()
                ),
            ));
        }
        if let Some(c) = value
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')))
        {
            return Err(ValidationError::new(
                FIELD,
                format!(
                    "unexpected character {c:?} in {:?}; use lower-case letters, digits, '_' and '-'",
                    truncate_for_error(value)
                ),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ClientId {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<ClientId> for String {
    fn from(value: ClientId) -> Self {
        value.0
    }
}

/// A caller's idempotency key: the same key means the same message, sent at most once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Longest key accepted.
    pub const MAX_LEN: usize = 128;

    /// Validates a key: 1 to 128 printable ASCII characters.
    pub fn new(value: &str) -> Result<Self, ValidationError> {
        const FIELD: &str = "idempotency_key";
        if value.is_empty() {
            return Err(ValidationError::new(FIELD, "must not be empty"));
        }
        if value.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                FIELD,
                format!(
                    "expected at most {} characters, found {}",
                    Self::MAX_LEN,
                    value.len()
                ),
            ));
        }
        if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(ValidationError::new(
                FIELD,
                format!("expected printable ASCII without spaces, found {c:?}"),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<IdempotencyKey> for String {
    fn from(value: IdempotencyKey) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_unique_and_time_ordered() {
        let a = MessageId::new();
        let b = MessageId::new();
        assert_ne!(a, b);
        assert!(a < b);
        assert_eq!(a.to_string().parse::<MessageId>().unwrap(), a);
        assert!("not-a-uuid".parse::<MessageId>().is_err());
    }

    #[test]
    fn ids_made_at_a_time_carry_its_millisecond_and_still_increase() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-05-10T08:00:00.123456Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let ids: Vec<MessageId> = (0..100).map(|_| MessageId::at(at)).collect();
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "strictly increasing"
        );
        let (seconds, nanos) = ids[0].as_uuid().get_timestamp().unwrap().to_unix();
        assert_eq!((seconds, nanos / 1_000_000), (at.timestamp() as u64, 123));
        let before_1970 = chrono::DateTime::from_timestamp(-5, 0).unwrap();
        assert_eq!(MessageId::at(before_1970).as_uuid().get_version_num(), 7);
    }

    #[test]
    fn vendor_ids_are_lower_case_names() {
        assert_eq!(VendorId::new("aliyun").unwrap().as_str(), "aliyun");
        assert!(VendorId::new("Aliyun").is_err());
        assert!(VendorId::new("").is_err());
        assert!(VendorId::new("ali yun").is_err());
        assert!(VendorId::new(&"a".repeat(33)).is_err());
    }

    #[test]
    fn vendor_ids_compare_hash_and_serialise_as_their_names() {
        let longest = "v".repeat(VendorId::MAX_LEN);
        let names = ["aliyun", "ali", "tencent", "cloopen", "b", longest.as_str()];
        for a in names {
            let id = VendorId::new(a).unwrap();
            assert_eq!(id.as_str(), a);
            assert_eq!(id.to_string(), a);
            assert_eq!(String::from(id.clone()), a);
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, format!("\"{a}\""));
            assert_eq!(serde_json::from_str::<VendorId>(&json).unwrap(), id);
            for b in names {
                let other = VendorId::new(b).unwrap();
                assert_eq!(id.cmp(&other), a.cmp(b), "{a} against {b}");
                assert_eq!(id == other, a == b);
            }
        }
        let hash = |id: &VendorId| {
            use std::hash::{BuildHasher, RandomState};
            let state = RandomState::new();
            (state.hash_one(id), state.hash_one(id.as_str()))
        };
        let (of_id, of_name) = hash(&VendorId::new("tencent").unwrap());
        assert_eq!(
            of_id, of_name,
            "hashes like its name, as Borrow<str> would need"
        );
        assert!(serde_json::from_str::<VendorId>("\"Aliyun\"").is_err());
    }

    #[test]
    fn template_and_key_errors_name_the_field() {
        let e = TemplateId::new("").unwrap_err();
        assert_eq!(e.field, "template");
        assert!(TemplateId::new("SMS_123456").is_ok());
        assert!(
            TemplateId::new("login code")
                .unwrap_err()
                .problem
                .contains("' '")
        );
        let e = IdempotencyKey::new("has space").unwrap_err();
        assert_eq!(e.field, "idempotency_key");
        assert!(IdempotencyKey::new(&"k".repeat(129)).is_err());
        assert!(IdempotencyKey::new("order-42:login").is_ok());
    }
}
