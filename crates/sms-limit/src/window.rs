//! Checks of per-recipient windows, shared by both recipient limiters.

use crate::config::RecipientWindow;
use crate::error::ConfigError;

/// Checks that there is at least one window and that each allows something.
pub(crate) fn validate_windows(windows: &[RecipientWindow]) -> Result<(), ConfigError> {
    if windows.is_empty() {
        return Err(ConfigError::new(
            "recipient_windows",
            "expected at least one window",
        ));
    }
    for (index, window) in windows.iter().enumerate() {
        if window.limit == 0 {
            return Err(ConfigError::new(
                format!("recipient_windows[{index}].limit"),
                "expected at least 1, found 0",
            ));
        }
        if window.window.is_zero() {
            return Err(ConfigError::new(
                format!("recipient_windows[{index}].window_s"),
                "expected a window longer than 0",
            ));
        }
    }
    Ok(())
}
