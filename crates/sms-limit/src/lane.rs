//! The two lanes of the global limit: how much of a window normal messages may use.
//!
//! High-priority messages (login codes, alerts) may use the whole window. Normal ones
//! stop at a ceiling below the limit, so that the rest, the high lane's headroom, is
//! free for a high-priority message however much bulk is being sent. Both lanes share
//! one log: a high-priority permit counts against the normal ceiling too, so the high
//! lane can still take the whole window when it needs it.
//!
//! A normal request larger than the ceiling would otherwise never fit; it goes alone,
//! in an empty window. So a request fits when `count + permits <= max(ceiling, permits)`
//! (and `permits <= limit`): for a request within the ceiling that is the ceiling, for a
//! larger one it means the window is empty.

use sms_core::Priority;

use crate::error::ConfigError;

/// Checks that `headroom` is a share from 0 up to, but not including, 1; errors name
/// `field`.
pub(crate) fn validate_headroom(headroom: f64, field: &str) -> Result<(), ConfigError> {
    if (0.0..1.0).contains(&headroom) {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("expected a share from 0.0 up to (not including) 1.0, found {headroom}"),
        ))
    }
}

/// The most permits normal messages may hold in a window of `limit`, when `headroom`
/// (a valid share) of it is kept for the high lane.
///
/// The headroom is `limit × headroom` rounded to the nearest permit: rounding, not
/// rounding up, so that a product like `30 × 0.1` (3.0000000000000004 in binary
/// floating point) keeps 3 permits, not 4.
pub(crate) fn normal_ceiling(limit: u32, headroom: f64) -> u32 {
    let kept = (f64::from(limit) * headroom).round();
    // `kept` lies in 0..=limit for a share below 1, so the conversion is exact.
    limit - (kept as u32).min(limit)
}

/// Where a request of `permits` in lane `priority` must leave the window's count:
/// the count plus the request must stay within the returned cap.
pub(crate) fn cap_for(limit: u32, normal_ceiling: u32, permits: u32, priority: Priority) -> u32 {
    match priority {
        Priority::High => limit,
        // A request larger than the ceiling gets the cap `permits`: it fits an empty
        // window only.
        Priority::Normal => normal_ceiling.max(permits).min(limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_keeps_the_rounded_share_for_the_high_lane() {
        assert_eq!(normal_ceiling(3000, 0.1), 2700);
        assert_eq!(normal_ceiling(30, 0.1), 27);
        assert_eq!(normal_ceiling(20, 0.25), 15);
        assert_eq!(normal_ceiling(4, 0.1), 4);
        assert_eq!(normal_ceiling(5, 0.1), 4);
        assert_eq!(normal_ceiling(5, 0.5), 2);
        assert_eq!(normal_ceiling(1, 0.9), 0);
        assert_eq!(normal_ceiling(u32::MAX, 0.0), u32::MAX);
    }

    #[test]
    fn the_cap_is_the_whole_window_for_high_and_the_ceiling_for_normal() {
        assert_eq!(cap_for(20, 15, 1, Priority::High), 20);
        assert_eq!(cap_for(20, 15, 1, Priority::Normal), 15);
        // Larger than the ceiling: only an empty window holds it.
        assert_eq!(cap_for(20, 15, 18, Priority::Normal), 18);
        // Larger than the limit: never fits, in either lane.
        assert_eq!(cap_for(20, 15, 25, Priority::Normal), 20);
    }

    #[test]
    fn a_headroom_must_be_a_share_below_one() {
        for valid in [0.0, 0.1, 0.999] {
            validate_headroom(valid, "high_priority_headroom").unwrap();
        }
        for invalid in [-0.1, 1.0, 1.5, f64::NAN, f64::INFINITY] {
            let error = validate_headroom(invalid, "high_priority_headroom").unwrap_err();
            assert_eq!(error.field, "high_priority_headroom");
            assert!(error.problem.contains("from 0.0 up to"), "{error}");
        }
    }
}
