//! The vendors' default limits on messages to one number.
//!
//! Every vendor protects recipients from floods: Aliyun allows one message per minute,
//! five per hour and ten per day with the same signature to a number; Tencent one
//! message with the same content per 30 seconds and ten a day to a number; Cloopen one
//! message with the same template per minute and ten a day. Over a limit the vendor
//! refuses that number with its per-number code, and the message waits for the window.
//!
//! The windows slide on tokio's clock, so a test with paused time moves through them
//! with `tokio::time::advance`. A refused message does not count. Memory stays bounded:
//! each number keeps only its sends within the longest window, and numbers with none
//! are forgotten in a sweep whenever the table has doubled since the last one.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Mutex;
use std::time::Duration;

use sms_core::sync::lock;
use tokio::time::Instant;

use super::{Protocol, Refusal};

/// Which messages to one number a window counts together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Those with the same signature (Aliyun).
    SignatureAndNumber,
    /// Those with the same content: signature, template and arguments (Tencent).
    ContentAndNumber,
    /// All of them (Tencent's daily limit).
    Number,
    /// Those with the same template (Cloopen).
    TemplateAndNumber,
}

/// One limit: at most `limit` messages within `length`, else the vendor's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// What the window counts together.
    pub scope: Scope,
    /// Messages allowed within the window.
    pub limit: usize,
    /// How far back the window reaches.
    pub length: Duration,
    /// The vendor's code for a message over the limit.
    pub code: &'static str,
    /// The vendor's words.
    pub message: &'static str,
    /// What the HTTP adapter reads from the code as the wait before the next try.
    pub retry_after: Duration,
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// Longest window first: over several limits at once, the vendor's answer names the one
/// that keeps the number waiting longest.
const ALIYUN: [Window; 3] = [
    Window {
        scope: Scope::SignatureAndNumber,
        limit: 10,
        length: DAY,
        code: "isv.BUSINESS_LIMIT_CONTROL",
        message: "触发天级流控Permits:10",
        retry_after: DAY,
    },
    Window {
        scope: Scope::SignatureAndNumber,
        limit: 5,
        length: HOUR,
        code: "isv.BUSINESS_LIMIT_CONTROL",
        message: "触发小时级流控Permits:5",
        retry_after: HOUR,
    },
    Window {
        scope: Scope::SignatureAndNumber,
        limit: 1,
        length: MINUTE,
        code: "isv.BUSINESS_LIMIT_CONTROL",
        message: "触发分钟级流控Permits:1",
        retry_after: MINUTE,
    },
];

const TENCENT: [Window; 2] = [
    Window {
        scope: Scope::Number,
        limit: 10,
        length: DAY,
        code: "LimitExceeded.PhoneNumberDailyLimit",
        message: "the number of messages sent to this phone number today exceeds the limit",
        retry_after: DAY,
    },
    Window {
        scope: Scope::ContentAndNumber,
        limit: 1,
        length: Duration::from_secs(30),
        code: "LimitExceeded.PhoneNumberThirtySecondLimit",
        message: "the same content was sent to this phone number within 30 seconds",
        retry_after: Duration::from_secs(30),
    },
];

const CLOOPEN: [Window; 2] = [
    Window {
        scope: Scope::TemplateAndNumber,
        limit: 10,
        length: DAY,
        code: "160039",
        message: "超出同模板同号天发送次数上限",
        retry_after: DAY,
    },
    Window {
        scope: Scope::TemplateAndNumber,
        limit: 1,
        length: MINUTE,
        code: "160038",
        message: "短信验证码发送过频繁",
        retry_after: MINUTE,
    },
];

impl Window {
    /// The vendor's default windows, longest first.
    pub fn defaults(protocol: Protocol) -> &'static [Window] {
        match protocol {
            Protocol::Aliyun => &ALIYUN,
            Protocol::Tencent => &TENCENT,
            Protocol::Cloopen => &CLOOPEN,
        }
    }

    fn refusal(&self) -> Refusal {
        Refusal::RecipientLimited {
            code: self.code,
            message: self.message.to_owned(),
            retry_after: self.retry_after,
        }
    }
}

/// One message to one number, as the limits see it.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The number, E.164.
    pub number: &'a str,
    /// The signature it is sent with.
    pub signature: &'a str,
    /// The vendor's template id.
    pub template_id: &'a str,
    /// The arguments, in order.
    pub args: &'a [String],
}

/// The sends each number had within the longest window, by a hash of what the window
/// counts together (scope, number, and signature, content or template). A collision of
/// two 64-bit hashes would make two numbers share a window; with the keys random per
/// table it is too unlikely to matter for a simulation.
struct Sent {
    by_key: HashMap<u64, VecDeque<Instant>>,
    /// The table's size after the last sweep.
    swept_at: usize,
}

/// A sweep waits until the table holds at least this many keys.
const MIN_SWEEP: usize = 1024;

/// One vendor's per-number limits and what it sent within them.
pub struct PerNumberLimits {
    windows: &'static [Window],
    /// Each scope the windows use, with the longest window of that scope.
    horizons: Vec<(Scope, Duration)>,
    longest: Duration,
    hasher: RandomState,
    sent: Mutex<Sent>,
}

impl std::fmt::Debug for PerNumberLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerNumberLimits")
            .field("windows", &self.windows)
            .field("tracked", &self.tracked())
            .finish()
    }
}

impl PerNumberLimits {
    /// The vendor's default windows ([`Window::defaults`]), nothing sent yet.
    pub fn new(protocol: Protocol) -> Self {
        Self::with_windows(Window::defaults(protocol))
    }

    /// Other windows, longest first (the first over its limit answers).
    pub fn with_windows(windows: &'static [Window]) -> Self {
        let mut horizons: Vec<(Scope, Duration)> = Vec::new();
        for w in windows {
            match horizons.iter_mut().find(|(s, _)| *s == w.scope) {
                Some((_, longest)) => *longest = (*longest).max(w.length),
                None => horizons.push((w.scope, w.length)),
            }
        }
        Self {
            windows,
            longest: windows.iter().map(|w| w.length).max().unwrap_or_default(),
            horizons,
            hasher: RandomState::new(),
            sent: Mutex::new(Sent {
                by_key: HashMap::new(),
                swept_at: 0,
            }),
        }
    }

    /// The windows applied.
    pub fn windows(&self) -> &'static [Window] {
        self.windows
    }

    /// How many keys (numbers with their signature, content or template) are tracked:
    /// bounded by what was sent within the longest window.
    pub fn tracked(&self) -> usize {
        lock(&self.sent).by_key.len()
    }

    /// Admits one message to one number, or refuses it with the longest window it is
    /// over. An admitted message counts from now on.
    pub fn admit(&self, message: &Outgoing<'_>) -> Result<(), Refusal> {
        self.admit_all(std::slice::from_ref(message))
    }

    /// Admits messages to several numbers together or none of them (Aliyun and Cloopen
    /// answer one code for a whole request): the refusal is the first number's over a
    /// window. The same number twice counts twice.
    pub fn admit_all(&self, messages: &[Outgoing<'_>]) -> Result<(), Refusal> {
        let now = Instant::now();
        let mut sent = lock(&self.sent);
        let mut recorded: Vec<u64> = Vec::with_capacity(messages.len() * self.horizons.len());
        for message in messages {
            let over = self.windows.iter().find(|w| {
                let key = self.key(w.scope, message);
                let within = sent.by_key.get(&key).map_or(0, |times| {
                    times
                        .iter()
                        .rev()
                        .take_while(|t| now.duration_since(**t) < w.length)
                        .count()
                });
                within >= w.limit
            });
            if let Some(window) = over {
                // Nothing of a refused request counts.
                for key in &recorded {
                    if let Some(times) = sent.by_key.get_mut(key) {
                        times.pop_back();
                    }
                }
                return Err(window.refusal());
            }
            for &(scope, horizon) in &self.horizons {
                let key = self.key(scope, message);
                let times = sent.by_key.entry(key).or_default();
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= horizon)
                {
                    times.pop_front();
                }
                times.push_back(now);
                recorded.push(key);
            }
        }
        if sent.by_key.len() > MIN_SWEEP.max(2 * sent.swept_at) {
            let longest = self.longest;
            sent.by_key.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < longest)
            });
            sent.swept_at = sent.by_key.len();
        }
        Ok(())
    }

    fn key(&self, scope: Scope, message: &Outgoing<'_>) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        scope.hash(&mut hasher);
        message.number.hash(&mut hasher);
        match scope {
            Scope::SignatureAndNumber => message.signature.hash(&mut hasher),
            Scope::ContentAndNumber => {
                message.signature.hash(&mut hasher);
                message.template_id.hash(&mut hasher);
                message.args.hash(&mut hasher);
            }
            Scope::Number => {}
            Scope::TemplateAndNumber => message.template_id.hash(&mut hasher),
        }
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const NUMBER: &str = "+8613800138000";

    fn to<'a>(number: &'a str, signature: &'a str, args: &'a [String]) -> Outgoing<'a> {
        Outgoing {
            number,
            signature,
            template_id: "T1",
            args,
        }
    }

    fn refused(limits: &PerNumberLimits, message: &Outgoing<'_>) -> Option<(String, String)> {
        limits
            .admit(message)
            .err()
            .map(|r| (r.code().to_owned(), r.message().to_owned()))
    }

    fn aliyun(words: &str) -> Option<(String, String)> {
        Some(("isv.BUSINESS_LIMIT_CONTROL".into(), words.into()))
    }

    #[tokio::test(start_paused = true)]
    async fn aliyun_allows_one_a_minute_five_an_hour_ten_a_day_per_signature() {
        let limits = PerNumberLimits::new(Protocol::Aliyun);
        let m = to(NUMBER, "签名", &[]);
        assert_eq!(refused(&limits, &m), None);
        advance(Duration::from_millis(59_999)).await;
        assert_eq!(refused(&limits, &m), aliyun("触发分钟级流控Permits:1"));
        // Another signature, or another number, has its own windows.
        assert_eq!(refused(&limits, &to(NUMBER, "别的", &[])), None);
        assert_eq!(refused(&limits, &to("+8613800138001", "签名", &[])), None);
        advance(Duration::from_millis(1)).await;
        assert_eq!(refused(&limits, &m), None, "the minute ends at 60 s");
        for _ in 0..3 {
            advance(MINUTE).await;
            assert_eq!(refused(&limits, &m), None);
        }
        // Five within the hour (at 0, 60, 120, 180 and 240 s): the sixth is refused
        // until the first leaves the hour, 3600 s after it.
        advance(MINUTE).await;
        assert_eq!(refused(&limits, &m), aliyun("触发小时级流控Permits:5"));
        advance(HOUR - Duration::from_secs(301)).await;
        assert_eq!(refused(&limits, &m), aliyun("触发小时级流控Permits:5"));
        advance(Duration::from_secs(1)).await;
        assert_eq!(refused(&limits, &m), None, "the hour ends 3600 s after");
        // Five more, spread over hours, make ten within the day.
        for _ in 0..4 {
            advance(HOUR).await;
            assert_eq!(refused(&limits, &m), None);
        }
        advance(HOUR).await;
        let refusal = limits.admit(&m).unwrap_err();
        assert_eq!(refusal.code(), "isv.BUSINESS_LIMIT_CONTROL");
        assert_eq!(refusal.message(), "触发天级流控Permits:10");
        assert!(
            matches!(refusal, Refusal::RecipientLimited { retry_after, .. } if retry_after == DAY)
        );
        // The first of the ten was sent at 0 s, six hours ago; a day after it the
        // number may receive again.
        advance(DAY - 6 * HOUR - Duration::from_secs(1)).await;
        assert_eq!(refused(&limits, &m), aliyun("触发天级流控Permits:10"));
        advance(Duration::from_secs(1)).await;
        assert_eq!(refused(&limits, &m), None, "the day ends 24 h after");
    }

    #[tokio::test(start_paused = true)]
    async fn tencent_limits_the_same_content_per_30_s_and_any_content_per_day() {
        let limits = PerNumberLimits::new(Protocol::Tencent);
        let code = vec!["1234".to_owned()];
        let other = vec!["5678".to_owned()];
        let m = to(NUMBER, "签名", &code);
        assert_eq!(refused(&limits, &m), None);
        advance(Duration::from_millis(29_999)).await;
        assert_eq!(
            limits.admit(&m).unwrap_err().code(),
            "LimitExceeded.PhoneNumberThirtySecondLimit"
        );
        // Other content goes through at once.
        assert_eq!(refused(&limits, &to(NUMBER, "签名", &other)), None);
        advance(Duration::from_millis(1)).await;
        assert_eq!(refused(&limits, &m), None, "30 s after, the same content");
        // Three so far; seven more with distinct content make ten within the day.
        let contents: Vec<Vec<String>> = (0..8).map(|i| vec![format!("c{i}")]).collect();
        for args in &contents[..7] {
            assert_eq!(refused(&limits, &to(NUMBER, "签名", args)), None);
        }
        let refusal = limits.admit(&to(NUMBER, "签名", &contents[7])).unwrap_err();
        assert_eq!(refusal.code(), "LimitExceeded.PhoneNumberDailyLimit");
        advance(DAY - Duration::from_secs(30) - Duration::from_millis(1)).await;
        assert!(limits.admit(&to(NUMBER, "签名", &contents[7])).is_err());
        advance(Duration::from_millis(1)).await;
        assert_eq!(
            refused(&limits, &to(NUMBER, "签名", &contents[7])),
            None,
            "the first message left the day"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cloopen_limits_the_same_template_per_minute_and_per_day() {
        let limits = PerNumberLimits::new(Protocol::Cloopen);
        let m = to(NUMBER, "", &[]);
        let other_template = Outgoing {
            template_id: "T2",
            ..m
        };
        assert_eq!(refused(&limits, &m), None);
        advance(Duration::from_millis(59_999)).await;
        assert_eq!(limits.admit(&m).unwrap_err().code(), "160038");
        assert_eq!(refused(&limits, &other_template), None);
        for _ in 0..9 {
            advance(MINUTE).await;
            assert_eq!(refused(&limits, &m), None);
        }
        advance(MINUTE).await;
        assert_eq!(limits.admit(&m).unwrap_err().code(), "160039");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_request_counts_for_none_of_its_numbers() {
        let limits = PerNumberLimits::new(Protocol::Aliyun);
        let second = "+8613800138001";
        limits.admit(&to(second, "签名", &[])).unwrap();
        let both = [to(NUMBER, "签名", &[]), to(second, "签名", &[])];
        assert!(limits.admit_all(&both).is_err());
        // The first number's message was not counted: it goes through alone.
        assert_eq!(refused(&limits, &to(NUMBER, "签名", &[])), None);
        // The same number twice in one request counts twice.
        let third = "+8613800138002";
        let twice = [to(third, "签名", &[]), to(third, "签名", &[])];
        assert!(limits.admit_all(&twice).is_err());
        assert_eq!(refused(&limits, &to(third, "签名", &[])), None);
    }

    #[tokio::test(start_paused = true)]
    async fn numbers_past_the_longest_window_are_forgotten() {
        let limits = PerNumberLimits::new(Protocol::Aliyun);
        let numbers = |offset: usize| -> Vec<String> {
            (0..5000)
                .map(|i| format!("+86139{:08}", offset + i))
                .collect()
        };
        for n in &numbers(0) {
            limits.admit(&to(n, "签名", &[])).unwrap();
        }
        assert_eq!(limits.tracked(), 5000);
        advance(DAY).await;
        for n in &numbers(5000) {
            limits.admit(&to(n, "签名", &[])).unwrap();
        }
        // A sweep ran once the table had doubled and dropped the day-old numbers.
        assert_eq!(limits.tracked(), 5000);
    }
}
