//! Fee schedules as other crates use them: behind the core trait, loaded from files.

use sms_core::{FeeSchedule, Money};
use sms_providers::ConfigError;
use sms_providers::fees::{self, TieredFeeSchedule};

fn money(text: &str) -> Money {
    text.parse().unwrap()
}

#[test]
fn every_built_in_vendor_has_a_price_at_any_volume() {
    for name in ["aliyun", "tencent", "cloopen"] {
        let schedule: Box<dyn FeeSchedule> = Box::new(fees::default_for(name).unwrap());
        for volume in [0, 10_000, 125_000, 1_000_000, 3_000_000, u64::MAX / 2] {
            assert!(
                schedule.price_at(volume) > Money::ZERO,
                "{name} at {volume} must not be free"
            );
        }
    }
}

#[test]
fn cloopen_does_not_become_the_cheapest_for_free_past_125000() {
    // The gateway picks the cheapest vendor by its current price: a missing tier after
    // 125,000 would make Cloopen's 0 from there on, and it would always win.
    let volume = 500_000;
    let cloopen = fees::cloopen().price_at(volume);
    let aliyun = fees::aliyun().price_at(volume);
    let tencent = fees::tencent().price_at(volume);
    assert_eq!(cloopen, money("0.040"));
    assert!(cloopen >= aliyun.min(tencent));
    assert_eq!(fees::cloopen().cost_of(100_000, 50_000), money("2000"));
}

#[test]
fn a_schedule_file_with_a_gap_is_refused_at_load_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloopen.toml");
    std::fs::write(
        &path,
        r#"
        # Cloopen's list as given, which stops at 125,000.
        tiers = [
            { up_to = 10417, price = "0.048" },
            { up_to = 22222, price = "0.045" },
            { up_to = 47619, price = "0.042" },
            { up_to = 125000, price = "0.040" },
        ]
        "#,
    )
    .unwrap();
    #[derive(serde::Deserialize)]
    struct File {
        tiers: Vec<sms_providers::fees::Tier>,
    }
    let file: File = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let e = TieredFeeSchedule::from_tiers(file.tiers).unwrap_err();
    assert!(matches!(e, ConfigError::FeeTier { tier: 3, .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("fee tier 3: the last tier must be open-ended"),
        "{e}"
    );
}

#[test]
fn cost_of_a_month_matches_the_tiers_by_hand() {
    // 10,000 at 0.047 + 40,000 at 0.045 + 50,000 at 0.043 + 20,000 at 0.041.
    let cost = fees::tencent().cost_of(0, 120_000);
    assert_eq!(
        cost,
        money("470") + money("1800") + money("2150") + money("820")
    );
}
