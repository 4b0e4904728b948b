//! How many messages a vendor bills for one text to one number.
//!
//! Vendors bill per segment, not per request, and the signature (`【…】`) they put in
//! front of the text is part of what they count:
//!
//! - For mainland China numbers (`+86`) every character counts as one, whatever its
//!   script: up to 70 characters are one message, a longer text is billed per 67.
//! - For other numbers a text in the GSM-7 alphabet fits 160 characters in one message
//!   and 153 per segment when split (characters of GSM-7's extension table, such as `€`
//!   or `{`, take two places). Any other text is sent as UCS-2: 70 units in one message,
//!   67 per segment, and a character outside the Basic Multilingual Plane (an emoji)
//!   takes two units.
//!
//! An empty text still costs one message.

use crate::phone::PhoneNumber;

/// The segment sizes of one encoding: units in a single message, units per segment of
/// a split one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sizes {
    single: u64,
    part: u64,
}

const MAINLAND: Sizes = Sizes {
    single: 70,
    part: 67,
};
const GSM7: Sizes = Sizes {
    single: 160,
    part: 153,
};
const UCS2: Sizes = MAINLAND;

/// Places a character takes in GSM-7, or `None` when it is not in the alphabet.
fn gsm7_units(c: char) -> Option<u64> {
    const BASIC: &str = "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                         ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà\n\r";
    const EXTENSION: &str = "^{}\\[~]|€\u{000C}";
    if BASIC.contains(c) {
        Some(1)
    } else if EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

fn count(units: u64, sizes: Sizes) -> u64 {
    if units <= sizes.single {
        1
    } else {
        units.div_ceil(sizes.part)
    }
}

/// Messages billed for sending `text` (signature included) to `recipient`.
pub fn billed_segments(text: &str, recipient: &PhoneNumber) -> u64 {
    if recipient.as_str().starts_with("+86") {
        return count(text.chars().count() as u64, MAINLAND);
    }
    match text.chars().map(gsm7_units).sum::<Option<u64>>() {
        Some(units) => count(units, GSM7),
        None => count(text.encode_utf16().count() as u64, UCS2),
    }
}

/// The text a vendor sends: its signature in `【】` followed by the body.
pub fn signed_text(signature: &str, body: &str) -> String {
    if signature.is_empty() {
        body.to_owned()
    } else {
        format!("【{signature}】{body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mainland() -> PhoneNumber {
        PhoneNumber::parse("+8613800138000").unwrap()
    }
    fn abroad() -> PhoneNumber {
        PhoneNumber::parse("+14155550100").unwrap()
    }

    #[test]
    fn mainland_counts_characters_seventy_then_sixty_seven() {
        let signed = |n: usize| signed_text("阿里云", &"验".repeat(n));
        // 【阿里云】 is 5 characters.
        assert_eq!(billed_segments(&signed(65), &mainland()), 1, "70 in all");
        assert_eq!(billed_segments(&signed(66), &mainland()), 2, "71 in all");
        assert_eq!(billed_segments(&signed(129), &mainland()), 2, "134 in all");
        assert_eq!(billed_segments(&signed(130), &mainland()), 3, "135 in all");
        // Latin text to a mainland number is counted the same way.
        assert_eq!(billed_segments(&"a".repeat(71), &mainland()), 2);
    }

    #[test]
    fn a_hundred_character_chinese_message_is_two() {
        let text = signed_text("腾讯云", &"码".repeat(95));
        assert_eq!(text.chars().count(), 100);
        assert_eq!(billed_segments(&text, &mainland()), 2);
    }

    #[test]
    fn international_gsm7_is_160_then_153() {
        let signed = |n: usize| signed_text("Shop", &"a".repeat(n));
        // 【Shop】 is 6 characters, and 【】 are not GSM-7: the text goes as UCS-2.
        assert_eq!(billed_segments(&signed(64), &abroad()), 1);
        assert_eq!(billed_segments(&signed(65), &abroad()), 2);
        // Without a bracketed signature, plain GSM-7 text.
        assert_eq!(billed_segments(&"a".repeat(160), &abroad()), 1);
        assert_eq!(billed_segments(&"a".repeat(161), &abroad()), 2);
        assert_eq!(billed_segments(&"a".repeat(306), &abroad()), 2);
        assert_eq!(billed_segments(&"a".repeat(307), &abroad()), 3);
        // Extension characters take two places.
        assert_eq!(billed_segments(&"€".repeat(80), &abroad()), 1);
        assert_eq!(billed_segments(&"€".repeat(81), &abroad()), 2);
    }

    #[test]
    fn other_text_abroad_is_ucs2_and_emoji_take_two_units() {
        assert_eq!(
            billed_segments(&"é".repeat(161), &abroad()),
            2,
            "é is GSM-7"
        );
        assert_eq!(billed_segments(&"ж".repeat(70), &abroad()), 1);
        assert_eq!(billed_segments(&"ж".repeat(71), &abroad()), 2);
        assert_eq!(billed_segments(&"😀".repeat(35), &abroad()), 1);
        assert_eq!(billed_segments(&"😀".repeat(36), &abroad()), 2);
        assert_eq!(billed_segments("", &abroad()), 1);
    }

    #[test]
    fn an_empty_signature_adds_nothing() {
        assert_eq!(signed_text("", "hi"), "hi");
        assert_eq!(signed_text("S", "hi"), "【S】hi");
    }
}
