use super::*;
use crate::time::ManualMonotonicClock;

const SECOND: Duration = Duration::from_secs(1);

fn phone(n: u32) -> PhoneNumber {
    PhoneNumber::parse(&format!("+86138{n:08}")).unwrap()
}

#[test]
fn no_window_is_rejected() {
    assert_eq!(
        InProcessRecipientLimiter::new(vec![]).unwrap_err().field,
        "recipient_windows"
    );
}

fn recipients(windows: Vec<RecipientWindow>) -> (InProcessRecipientLimiter, ManualMonotonicClock) {
    let clock = ManualMonotonicClock::new();
    let limiter = InProcessRecipientLimiter::with_clock(windows, Arc::new(clock.clone())).unwrap();
    (limiter, clock)
}

/// The logged times of `number`, or `None` when it has no log.
fn logged(limiter: &InProcessRecipientLimiter, number: &PhoneNumber) -> Option<Vec<u32>> {
    let key = recipient_key(number);
    let shard = lock(&limiter.shards[shard_of(key)]);
    shard.logs.get(&key).map(|log| log.times().to_vec())
}

fn allowed(limiter: &InProcessRecipientLimiter, number: &PhoneNumber) -> bool {
    limiter.check_now(std::slice::from_ref(number)) == vec![RecipientDecision::Allowed]
}

#[test]
fn recipient_keys_are_the_digits_and_their_count() {
    let key = |s: &str| recipient_key(&PhoneNumber::parse(s).unwrap());
    assert_eq!(key("+8613800138000"), (13 << 50) | 8_613_800_138_000);
    // The longest E.164 number stays below the count bits.
    assert_eq!(key("+999999999999999"), (15 << 50) | 999_999_999_999_999);
    // Distinct digit strings give distinct keys, leading zeros or not.
    assert_ne!(key("+10000000"), key("+100000000"));
    assert_ne!(key("+1234567"), key("+12345670"));
    // Two spellings of one number share a key.
    assert_eq!(key("+86 138-0013-8000"), key("008613800138000"));
}

#[test]
fn a_recipient_costs_a_bounded_number_of_bytes() {
    // One map entry: the `u64` key and a 16-byte log holding one time inline.
    assert_eq!(std::mem::size_of::<Log>(), 16);
    assert_eq!(std::mem::size_of::<(u64, Log)>(), 24);
    // More times go to one slice of `u32`: a count and at most `keep` times.
    let (limiter, clock) = recipients(vec![
        RecipientWindow::new(1, SECOND),
        RecipientWindow::new(10, Duration::from_secs(86_400)),
    ]);
    for _ in 0..30 {
        assert!(allowed(&limiter, &phone(1)) || clock.elapsed() >= 10 * SECOND);
        let key = recipient_key(&phone(1));
        let shard = lock(&limiter.shards[shard_of(key)]);
        match &shard.logs[&key] {
            Log::One(_) => {}
            Log::Many(slots) => assert!(slots.len() <= limiter.keep + 1),
        }
        drop(shard);
        clock.advance(SECOND);
    }
    assert_eq!(logged(&limiter, &phone(1)).unwrap().len(), 10);
}

#[test]
fn recipient_log_keeps_no_more_than_the_largest_limit() {
    let (limiter, clock) = recipients(vec![RecipientWindow::new(3, 10 * SECOND)]);
    for step in 0..10 {
        assert!(allowed(&limiter, &phone(1)));
        assert_eq!(
            logged(&limiter, &phone(1)).unwrap().len(),
            (step + 1).min(3)
        );
        clock.advance(4 * SECOND);
    }
}

#[test]
fn the_limit_is_hit_exactly_and_the_window_slides() {
    let (limiter, clock) = recipients(vec![RecipientWindow::new(10, Duration::from_secs(100))]);
    for _ in 0..10 {
        assert!(allowed(&limiter, &phone(1)));
        clock.advance(SECOND);
    }
    // 10 sent at 0..=9 s; the 11th waits for the first to leave at 100 s.
    assert_eq!(
        limiter.check_now(&[phone(1)]),
        vec![RecipientDecision::Limited {
            window: Duration::from_secs(100),
            limit: 10,
            retry_after: Duration::from_secs(90),
        }]
    );
    clock.advance(Duration::from_millis(89_999));
    assert!(!allowed(&limiter, &phone(1)));
    clock.advance(Duration::from_millis(1));
    assert!(allowed(&limiter, &phone(1)));
    // The one sent at 1 s leaves at 101 s, not before.
    assert!(!allowed(&limiter, &phone(1)));
    clock.advance(SECOND);
    assert!(allowed(&limiter, &phone(1)));
    assert!(!allowed(&limiter, &phone(1)));
}

#[test]
fn a_limited_recipient_is_counted_in_no_window() {
    let (limiter, clock) = recipients(vec![
        RecipientWindow::new(1, SECOND),
        RecipientWindow::new(3, Duration::from_secs(60)),
    ]);
    assert!(allowed(&limiter, &phone(1)));
    for _ in 0..100 {
        assert!(!allowed(&limiter, &phone(1)));
    }
    assert_eq!(logged(&limiter, &phone(1)).unwrap().len(), 1);
    clock.advance(SECOND);
    assert!(allowed(&limiter, &phone(1)));
    clock.advance(SECOND);
    assert!(allowed(&limiter, &phone(1)));
    clock.advance(SECOND);
    assert!(!allowed(&limiter, &phone(1)));
}

#[test]
fn several_recipients_in_one_request_are_decided_in_order() {
    let (limiter, _clock) = recipients(vec![RecipientWindow::new(1, SECOND)]);
    assert!(allowed(&limiter, &phone(2)));
    let decisions = limiter.check_now(&[phone(1), phone(2), phone(3), phone(1)]);
    let allowed: Vec<bool> = decisions
        .iter()
        .map(|d| *d == RecipientDecision::Allowed)
        .collect();
    assert_eq!(allowed, [true, false, true, false]);
}

#[test]
fn sub_millisecond_times_round_up_so_no_window_lets_more_through() {
    let (limiter, clock) = recipients(vec![RecipientWindow::new(1, SECOND)]);
    clock.advance(Duration::from_micros(400));
    assert!(allowed(&limiter, &phone(1)));
    // Logged at 1 ms: counts until 1001 ms, which `retry_after` names exactly.
    clock.advance(Duration::from_micros(999_700));
    assert_eq!(
        limiter.check_now(&[phone(1)]),
        vec![RecipientDecision::Limited {
            window: SECOND,
            limit: 1,
            retry_after: Duration::from_micros(900),
        }]
    );
    clock.advance(Duration::from_micros(900));
    assert!(allowed(&limiter, &phone(1)));
}

#[test]
fn times_are_read_back_across_the_u32_wrap() {
    let (limiter, clock) = recipients(vec![RecipientWindow::new(2, Duration::from_secs(60))]);
    // 2³² ms is 49.7 days; start just before the wrap.
    clock.advance(Duration::from_millis((1 << 32) - 10_000));
    assert!(allowed(&limiter, &phone(1)));
    clock.advance(Duration::from_secs(20));
    assert!(allowed(&limiter, &phone(1)));
    assert_eq!(
        limiter.check_now(&[phone(1)]),
        vec![RecipientDecision::Limited {
            window: Duration::from_secs(60),
            limit: 2,
            retry_after: Duration::from_secs(40),
        }]
    );
    clock.advance(Duration::from_secs(40));
    assert!(allowed(&limiter, &phone(1)));
}

#[test]
fn a_log_idle_for_2_to_the_32_ms_is_not_mistaken_for_a_recent_one() {
    let (limiter, clock) = recipients(vec![RecipientWindow::new(1, Duration::from_secs(86_400))]);
    assert!(allowed(&limiter, &phone(1)));
    // Exactly 2³² ms later the stored `u32` time looks like "now".
    clock.advance(Duration::from_millis(1 << 32));
    assert!(allowed(&limiter, &phone(1)));
    assert!(!allowed(&limiter, &phone(1)));
}

#[test]
fn windows_longer_than_2_to_the_30_ms_use_a_coarser_tick() {
    let long = Duration::from_secs(30 * 86_400);
    let (limiter, clock) = recipients(vec![RecipientWindow::new(1, long)]);
    assert_eq!(limiter.ticks.unit_ns, 3_000_000);
    assert!(allowed(&limiter, &phone(1)));
    clock.advance(long - SECOND);
    assert_eq!(
        limiter.check_now(&[phone(1)]),
        vec![RecipientDecision::Limited {
            window: long,
            limit: 1,
            retry_after: SECOND,
        }]
    );
    clock.advance(SECOND);
    assert!(allowed(&limiter, &phone(1)));
}

#[test]
fn recipients_idle_for_the_longest_window_are_forgotten() {
    let (limiter, clock) = recipients(vec![RecipientWindow::new(1, SECOND)]);
    let first: Vec<PhoneNumber> = (0..100).map(phone).collect();
    limiter.check_now(&first);
    assert_eq!(limiter.tracked_recipients(), 100);
    clock.advance(2 * SECOND);
    // Enough checks of other numbers that every shard sweeps at least once.
    let others: Vec<PhoneNumber> = (1000..1000 + 4 * RECIPIENT_SHARDS as u32 * SWEEP_EVERY)
        .map(phone)
        .collect();
    limiter.check_now(&others);
    let still_tracked = first
        .iter()
        .filter(|number| logged(&limiter, number).is_some())
        .count();
    assert_eq!(still_tracked, 0);
    // A second later every log is over: the next check of a shard forgets them all.
    clock.advance(2 * SECOND);
    limiter.check_now(&(0..2000).map(phone).collect::<Vec<_>>());
    assert_eq!(limiter.tracked_recipients(), 2000);
}

#[test]
fn giving_back_drops_the_newest_time_and_forgets_an_emptied_log() {
    let (limiter, clock) = recipients(vec![RecipientWindow::new(10, 60 * SECOND)]);
    for _ in 0..3 {
        assert!(allowed(&limiter, &phone(1)));
        clock.advance(SECOND);
    }
    assert!(allowed(&limiter, &phone(2)));
    assert_eq!(logged(&limiter, &phone(1)).unwrap(), [0, 1000, 2000]);
    limiter.give_back_now(&[phone(1)]);
    assert_eq!(logged(&limiter, &phone(1)).unwrap(), [0, 1000]);
    limiter.give_back_now(&[phone(1), phone(2)]);
    assert_eq!(logged(&limiter, &phone(1)).unwrap(), [0]);
    assert_eq!(logged(&limiter, &phone(2)), None);
    limiter.give_back_now(&[phone(1), phone(1)]);
    assert_eq!(logged(&limiter, &phone(1)), None);
    assert_eq!(limiter.tracked_recipients(), 0);
}

#[test]
fn giving_back_after_a_full_log_dropped_its_oldest_time_stays_exact() {
    // The log keeps two times; the third message pushes out the first, which had
    // left the window already, so losing it cannot let a fourth through early.
    let (limiter, clock) = recipients(vec![RecipientWindow::new(2, 10 * SECOND)]);
    assert!(allowed(&limiter, &phone(1)));
    clock.advance(SECOND);
    assert!(allowed(&limiter, &phone(1)));
    clock.advance(9 * SECOND);
    assert!(allowed(&limiter, &phone(1)));
    limiter.give_back_now(&[phone(1)]);
    assert_eq!(logged(&limiter, &phone(1)).unwrap(), [1000]);
    assert!(allowed(&limiter, &phone(1)));
    assert_eq!(
        limiter.check_now(&[phone(1)]),
        vec![RecipientDecision::Limited {
            window: 10 * SECOND,
            limit: 2,
            retry_after: SECOND,
        }]
    );
}

#[test]
fn full_windows_name_the_one_that_frees_last() {
    let clock = ManualMonotonicClock::new();
    let windows = vec![
        RecipientWindow::new(1, Duration::from_secs(60)),
        RecipientWindow::new(2, Duration::from_secs(3600)),
    ];
    let limiter = InProcessRecipientLimiter::with_clock(windows, Arc::new(clock.clone())).unwrap();
    assert_eq!(
        limiter.check_now(&[phone(1)]),
        vec![RecipientDecision::Allowed]
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        limiter.check_now(&[phone(1)]),
        vec![RecipientDecision::Allowed]
    );
    // Both windows are full now; the hour window frees at 3600 s, the minute one at 120 s.
    assert_eq!(
        limiter.check_now(&[phone(1)]),
        vec![RecipientDecision::Limited {
            window: Duration::from_secs(3600),
            limit: 2,
            retry_after: Duration::from_secs(3540),
        }]
    );
}
