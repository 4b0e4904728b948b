//! The last switches of the current vendor, with their reasons, for the status page.

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sms_core::VendorId;
use sms_core::sync::lock;
use utoipa::ToSchema;

/// Switches kept: far more than a day of failovers, and a bound on memory whatever
/// happens.
const KEPT: usize = 1_000;

/// One switch of the current vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Switch {
    /// When.
    pub at: DateTime<Utc>,
    /// The vendor switched away from.
    #[schema(value_type = String)]
    pub from: VendorId,
    /// The new current vendor.
    #[schema(value_type = String)]
    pub to: VendorId,
    /// Why (failures, recovery, operator).
    pub reason: String,
}

/// The last [`KEPT`] switches, oldest first.
#[derive(Debug, Default)]
pub struct SwitchLog {
    switches: Mutex<VecDeque<Switch>>,
}

impl SwitchLog {
    /// Records a switch, forgetting the oldest beyond [`KEPT`].
    pub fn record(&self, switch: Switch) {
        let mut switches = lock(&self.switches);
        if switches.len() == KEPT {
            switches.pop_front();
        }
        switches.push_back(switch);
    }

    /// The switches at or after `since`, oldest first.
    pub fn since(&self, since: DateTime<Utc>) -> Vec<Switch> {
        lock(&self.switches)
            .iter()
            .filter(|s| s.at >= since)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(minute: i64) -> Switch {
        Switch {
            at: DateTime::from_timestamp(minute * 60, 0).unwrap(),
            from: VendorId::new("aliyun").unwrap(),
            to: VendorId::new("tencent").unwrap(),
            reason: format!("switch {minute}"),
        }
    }

    #[test]
    fn keeps_the_last_switches_and_answers_those_since_a_time() {
        let log = SwitchLog::default();
        for minute in 0..(KEPT as i64 + 5) {
            log.record(switch(minute));
        }
        let all = log.since(DateTime::from_timestamp(0, 0).unwrap());
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].reason, "switch 5", "the oldest five were forgotten");
        let recent = log.since(switch(KEPT as i64 + 3).at);
        assert_eq!(
            recent.iter().map(|s| s.reason.as_str()).collect::<Vec<_>>(),
            [
                format!("switch {}", KEPT + 3),
                format!("switch {}", KEPT + 4)
            ]
        );
    }
}
