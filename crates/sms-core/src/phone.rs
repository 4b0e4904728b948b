//! E.164 phone numbers: parsed once at the edge, normalised, and masked in logs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// The fewest digits an international number has (country code included).
const MIN_DIGITS: usize = 7;
/// E.164 caps a number at 15 digits, country code included.
const MAX_DIGITS: usize = 15;

/// A validated phone number in E.164 form: `+` then 7 to 15 digits, the first not `0`.
///
/// Parsing accepts the usual ways people write numbers (`+86 138-0013-8000`,
/// `0086 13800138000`, `+1 (415) 555-0100`) and normalises them, so two spellings
/// of one number compare equal.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses and normalises `input`; the error says what was expected and what was found.
    pub fn parse(input: &str) -> Result<Self, PhoneNumberError> {
        let trimmed = input.trim();
        let rest = if let Some(rest) = trimmed.strip_prefix('+') {
            rest
        } else if let Some(rest) = trimmed.strip_prefix("00") {
            rest
        } else {
            return Err(PhoneNumberError::MissingCountryCode);
        };
        let mut digits = String::with_capacity(MAX_DIGITS + 1);
        digits.push('+');
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                // Separators people type; they carry no meaning.
                ' ' | '-' | '.' | '(' | ')' => {}
                other => return Err(PhoneNumberError::InvalidCharacter(other)),
            }
        }
        let count = digits.len() - 1;
        if count < MIN_DIGITS {
            return Err(PhoneNumberError::TooShort(count));
        }
        if count > MAX_DIGITS {
            return Err(PhoneNumberError::TooLong(count));
        }
        if digits.as_bytes()[1] == b'0' {
            return Err(PhoneNumberError::LeadingZero);
        }
        Ok(Self(digits))
    }

    /// The normalised form, `+` and digits only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without the leading `+`.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    /// A form safe for logs: the country code and a few digits at each end kept, at least
    /// four digits starred (`+86138****8000`).
    pub fn masked(&self) -> String {
        let s = &self.0;
        let tail = if s.len() >= 12 { 4 } else { 2 };
        let head = 6.min(s.len() - tail - 4);
        let hidden = s.len() - head - tail;
        format!(
            "{}{}{}",
            &s[..head],
            "*".repeat(hidden),
            &s[s.len() - tail..]
        )
    }
}

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneNumberError {
    /// Neither `+` nor `00` starts the number.
    #[error("expected an international number starting with + or 00, like +8613800138000")]
    MissingCountryCode,
    /// A character that is neither a digit nor a common separator.
    #[error(
        "unexpected character {0:?}; only digits, spaces, '-', '.', '(' and ')' may follow the +"
    )]
    InvalidCharacter(char),
    /// Fewer than seven digits.
    #[error("expected at least 7 digits, found {0}")]
    TooShort(usize),
    /// More than fifteen digits.
    #[error("expected at most 15 digits (E.164), found {0}")]
    TooLong(usize),
    /// A country code cannot start with 0.
    #[error("a country code cannot start with 0")]
    LeadingZero,
}

impl TryFrom<String> for PhoneNumber {
    type Error = PhoneNumberError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PhoneNumber> for String {
    fn from(value: PhoneNumber) -> Self {
        value.0
    }
}

impl std::str::FromStr for PhoneNumber {
    type Err = PhoneNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `Debug` masks the number, so a stray `{:?}` in a log line does not leak it.
impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

/// Parses a recipient at position `index` of a request, naming the field on failure.
pub(crate) fn parse_recipient(index: usize, input: &str) -> Result<PhoneNumber, ValidationError> {
    PhoneNumber::parse(input).map_err(|e| {
        ValidationError::new(
            format!("recipients[{index}]"),
            format!("{e}, found {:?}", truncate_for_error(input)),
        )
    })
}

/// Keeps error messages short when the offending input is huge.
pub(crate) fn truncate_for_error(input: &str) -> String {
    const LIMIT: usize = 40;
    if input.chars().count() <= LIMIT {
        input.to_owned()
    } else {
        let head: String = input.chars().take(LIMIT).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_and_normalises_common_spellings() {
        for input in [
            "+8613800138000",
            "+86 138 0013 8000",
            "+86-138-0013-8000",
            "008613800138000",
            "  +86 (138) 0013.8000 ",
        ] {
            assert_eq!(
                PhoneNumber::parse(input).unwrap().as_str(),
                "+8613800138000",
                "{input}"
            );
        }
        assert_eq!(
            PhoneNumber::parse("+1 (415) 555-0100").unwrap().digits(),
            "14155550100"
        );
    }

    #[test]
    fn rejects_malformed_numbers_with_the_reason() {
        assert_eq!(
            PhoneNumber::parse("13800138000"),
            Err(PhoneNumberError::MissingCountryCode)
        );
        assert_eq!(
            PhoneNumber::parse(""),
            Err(PhoneNumberError::MissingCountryCode)
        );
        assert_eq!(
            PhoneNumber::parse("+86abc"),
            Err(PhoneNumberError::InvalidCharacter('a'))
        );
        assert_eq!(
            PhoneNumber::parse("+123456"),
            Err(PhoneNumberError::TooShort(6))
        );
        assert_eq!(
            PhoneNumber::parse("+1234567890123456"),
            Err(PhoneNumberError::TooLong(16))
        );
        assert_eq!(
            PhoneNumber::parse("+0123456789"),
            Err(PhoneNumberError::LeadingZero)
        );
        assert_eq!(
            PhoneNumber::parse("++8613800138000"),
            Err(PhoneNumberError::InvalidCharacter('+'))
        );
        assert_eq!(
            PhoneNumber::parse("+86\u{0}13800138000"),
            Err(PhoneNumberError::InvalidCharacter('\0'))
        );
        // Full-width digits look like digits but are not ASCII.
        assert!(PhoneNumber::parse("+８６13800138000").is_err());
    }

    #[test]
    fn edge_lengths_are_inclusive() {
        assert!(PhoneNumber::parse("+1234567").is_ok());
        assert!(PhoneNumber::parse("+123456789012345").is_ok());
    }

    #[test]
    fn masks_the_middle_of_the_number() {
        let n = PhoneNumber::parse("+8613800138000").unwrap();
        assert_eq!(n.masked(), "+86138****8000");
        assert_eq!(format!("{n:?}"), "PhoneNumber(+86138****8000)");
        assert!(!format!("{n:?}").contains("13800138000"));
        let short = PhoneNumber::parse("+1234567").unwrap();
        assert_eq!(short.masked(), "+1****67");
        assert!(!short.masked().contains("1234567"));
    }

    #[test]
    fn serde_validates_on_the_way_in() {
        let n: PhoneNumber = serde_json::from_str("\"+86 138 0013 8000\"").unwrap();
        assert_eq!(n.as_str(), "+8613800138000");
        assert!(serde_json::from_str::<PhoneNumber>("\"12345\"").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_output_is_canonical(s in "\\PC{0,30}") {
            if let Ok(n) = PhoneNumber::parse(&s) {
                prop_assert!(n.as_str().starts_with('+'));
                prop_assert!(n.digits().bytes().all(|b| b.is_ascii_digit()));
                prop_assert_eq!(PhoneNumber::parse(n.as_str()).unwrap(), n);
            }
        }

        #[test]
        fn every_valid_digit_string_round_trips(d in "[1-9][0-9]{6,14}") {
            let n = PhoneNumber::parse(&format!("+{d}")).unwrap();
            prop_assert_eq!(n.digits(), d.as_str());
        }
    }
}
