//! Fuzz target bodies and a seeded input generator.
//!
//! The same two functions run in two ways:
//! - coverage-guided, with cargo-fuzz on nightly (`cargo +nightly fuzz run phone_number`,
//!   `cargo +nightly fuzz run request_decoder`, from this directory);
//! - as a bounded smoke run on stable, in the gateway's test suite and in `cargo xtask
//!   chaos`, which feed them seeded random and mutated inputs from [`Inputs`].
//!
//! Each body panics when an invariant breaks, which is what both runners report.

use sms_core::{MAX_ARG_CHARS, MAX_ARGS, MAX_RECIPIENTS, PhoneNumber, RawSmsRequest, SmsRequest};

/// Longest error message a caller can make the decoder produce: errors quote inputs
/// only in a truncated form, so a huge body cannot come back (or reach a log) whole.
const MAX_PROBLEM_BYTES: usize = 1024;

/// The phone-number parser: never panics; what it accepts is E.164 (`+`, 7 to 15
/// digits, no leading zero), parses again to itself, and masks at least four digits.
pub fn phone_number(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    match PhoneNumber::parse(input) {
        Ok(number) => {
            let s = number.as_str();
            let digits = number.digits();
            assert!(s.starts_with('+'), "{s:?}");
            assert!((7..=15).contains(&digits.len()), "{s:?}");
            assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{s:?}");
            assert!(!digits.starts_with('0'), "{s:?}");
            assert_eq!(PhoneNumber::parse(s).as_ref(), Ok(&number), "{input:?}");
            let masked = number.masked();
            assert_eq!(masked.len(), s.len(), "{masked:?}");
            assert!(masked.matches('*').count() >= 4, "{masked:?}");
            assert!(!masked.contains(digits), "{masked:?}");
            assert!(
                !format!("{number:?}").contains(digits),
                "Debug shows the number"
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// The request decoder (JSON to a validated request): never panics; every refusal names
/// a field and says what is wrong in bounded space; what it accepts keeps the limits,
/// has distinct recipients and survives a round trip through its stored form.
pub fn request_decoder(data: &[u8]) {
    let Ok(raw) = serde_json::from_slice::<RawSmsRequest>(data) else {
        return;
    };
    match SmsRequest::try_from(raw) {
        Ok(request) => {
            assert!(!request.recipients().is_empty());
            assert!(request.recipients().len() <= MAX_RECIPIENTS);
            assert!(request.args().len() <= MAX_ARGS);
            for arg in request.args() {
                assert!(arg.chars().count() <= MAX_ARG_CHARS);
                assert!(
                    !arg.chars()
                        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')),
                    "control character accepted in {arg:?}"
                );
            }
            let mut seen = std::collections::HashSet::new();
            for r in request.recipients() {
                assert!(seen.insert(r.clone()), "duplicate recipient accepted");
            }
            let again = SmsRequest::try_from(request.to_raw()).expect("stored form decodes");
            assert_eq!(again, request);
            let stored = serde_json::to_vec(&request.to_raw()).expect("serialises");
            let back: SmsRequest = serde_json::from_slice(&stored).expect("JSON round trip");
            assert_eq!(back, request);
        }
        Err(e) => {
            assert!(!e.field.is_empty(), "an error without a field: {e}");
            let problem = e.to_string();
            assert!(!problem.is_empty());
            assert!(
                problem.len() <= MAX_PROBLEM_BYTES,
                "a {} byte error message",
                problem.len()
            );
        }
    }
}

/// A small seeded generator (SplitMix64): the same seed gives the same inputs, so a
/// failing smoke case can be replayed from the seed it prints.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Pieces that tend to find bugs in number and text handling.
pub const INTERESTING: &[&str] = &[
    "",
    "+",
    "00",
    "0",
    "+0",
    "+86",
    "+8613800138000",
    "0086 138 0013 8000",
    "+1 (415) 555-0100",
    "+123456789012345",
    "+1234567890123456",
    "+123456",
    " ",
    "-",
    ".",
    "(",
    ")",
    "\u{0}",
    "\u{7}",
    "\u{1b}[31m",
    "\u{85}",
    "\u{200b}",
    "\u{feff}",
    "\u{202e}",
    "\n",
    "\r\n",
    "\t",
    "😀",
    "👨‍👩‍👧",
    "𝟙𝟚𝟛",
    "１２３",
    "＋",
    "٣",
    "\u{10ffff}",
    "\\u0000",
    "\\ud83d",
    "\\ud800",
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "null",
    "true",
    "1e999",
    "-1",
    "18446744073709551616",
    "9999999999999999999999",
    "0.5",
    "NaN",
];

/// Valid requests the mutator starts from.
pub const SEEDS: &[&str] = &[
    r#"{"template":"SMS_LOGIN","args":["123456"],"recipients":["+8613800138000"]}"#,
    r#"{"template":"t","recipients":["+86 138 0013 8000","+14155550100"],"idempotency_key":"k-1"}"#,
    r#"{"template":"notice.v2","args":["a###b;c","","😀"],"recipients":["0044 20 7946 0958"],"expires_in_s":300}"#,
];

/// Seeded inputs for the smoke runs: mutated seeds, spliced pieces, structured requests.
#[derive(Debug, Clone)]
pub struct Inputs {
    rng: Rng,
}

impl Inputs {
    /// Inputs from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
        }
    }

    /// A phone-number-like string.
    pub fn phone(&mut self) -> String {
        let r = &mut self.rng;
        let mut s = String::new();
        match r.below(3) {
            0 => s.push('+'),
            1 => s.push_str("00"),
            _ => {}
        }
        for _ in 0..r.below(20) {
            match r.below(10) {
                0..=6 => s.push(char::from(b'0' + r.below(10) as u8)),
                7 => s.push(*r.pick(&[' ', '-', '.', '(', ')'])),
                _ => s.push_str(r.pick::<&str>(INTERESTING)),
            }
        }
        s
    }

    /// A JSON string of interesting pieces, sometimes long.
    pub fn text(&mut self) -> String {
        let r = &mut self.rng;
        let mut s = String::new();
        for _ in 0..r.below(6) {
            s.push_str(r.pick::<&str>(INTERESTING));
            if r.below(3) == 0 {
                s.push_str(&"x".repeat(r.below(600)));
            }
        }
        serde_json::to_string(&s).expect("string")
    }

    /// A JSON request body, often valid, often wrong in one place.
    pub fn request(&mut self) -> Vec<u8> {
        let mut fields: Vec<String> = Vec::new();
        if self.rng.below(8) != 0 {
            let v = match self.rng.below(6) {
                0 => self.text(),
                1 => self
                    .rng
                    .pick(&["1", "null", "[]", "{}", "true"])
                    .to_string(),
                _ => self
                    .rng
                    .pick(&[
                        "\"SMS_LOGIN\"",
                        "\"t\"",
                        "\"a.b-c_d\"",
                        "\"\"",
                        "\"bad template\"",
                    ])
                    .to_string(),
            };
            fields.push(format!("\"template\":{v}"));
        }
        if self.rng.below(4) != 0 {
            let n = if self.rng.below(10) == 0 {
                MAX_ARGS + 1
            } else {
                self.rng.below(4)
            };
            let args: Vec<String> = (0..n).map(|_| self.text()).collect();
            fields.push(format!("\"args\":[{}]", args.join(",")));
        }
        if self.rng.below(8) != 0 {
            let n = match self.rng.below(20) {
                0 => 0,
                1 => MAX_RECIPIENTS + 1,
                _ => 1 + self.rng.below(3),
            };
            let list: Vec<String> = (0..n)
                .map(|i| {
                    if n > 3 {
                        format!("\"+86138{i:08}\"")
                    } else {
                        serde_json::to_string(&self.phone()).expect("string")
                    }
                })
                .collect();
            fields.push(format!("\"recipients\":[{}]", list.join(",")));
        }
        if self.rng.below(3) == 0 {
            let key = self.text();
            fields.push(format!("\"idempotency_key\":{key}"));
        }
        if self.rng.below(3) == 0 {
            let v = self.rng.pick(&[
                "0",
                "1",
                "300",
                "604800",
                "604801",
                "-1",
                "1.5",
                "\"300\"",
                "18446744073709551616",
            ]);
            fields.push(format!("\"expires_in_s\":{v}"));
        }
        if self.rng.below(12) == 0 {
            fields.push("\"extra\":1".to_owned());
        }
        format!("{{{}}}", fields.join(",")).into_bytes()
    }

    /// A seed request with a few byte-level mutations.
    pub fn mutated(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        let mut data = r.pick(SEEDS).as_bytes().to_vec();
        for _ in 0..1 + r.below(4) {
            let at = r.below(data.len() + 1);
            match r.below(5) {
                0 if !data.is_empty() => {
                    let i = r.below(data.len());
                    data[i] ^= 1 << r.below(8);
                }
                1 => {
                    let piece = r.pick(INTERESTING).as_bytes().to_vec();
                    data.splice(at..at, piece);
                }
                2 => {
                    let end = (at + r.below(16)).min(data.len());
                    data.drain(at..end);
                }
                3 => data.truncate(at),
                _ => {
                    let byte = r.next_u64() as u8;
                    data.insert(at, byte);
                }
            }
        }
        data
    }
}
