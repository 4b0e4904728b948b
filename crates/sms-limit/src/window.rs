//! Checks of per-recipient windows: the configuration and both recipient limiters
//! accept the same ones.

use sms_core::RecipientWindow;

use crate::error::ConfigError;

/// Checks that `window` allows at least one message in a window longer than 0;
/// errors name `field` (such as `recipient_windows[1]`) and the part that is wrong.
pub(crate) fn validate_window(window: &RecipientWindow, field: &str) -> Result<(), ConfigError> {
    if window.limit == 0 {
        return Err(ConfigError::new(
            format!("{field}.limit"),
            "expected at least 1, found 0",
        ));
    }
    if window.window.is_zero() {
        return Err(ConfigError::new(
            format!("{field}.window_s"),
            "expected a window longer than 0",
        ));
    }
    Ok(())
}

/// Checks that there is at least one window and that each allows something. A
/// limiter needs a window; the configuration may list none, to turn the per-recipient
/// limit off.
pub(crate) fn validate_windows(windows: &[RecipientWindow]) -> Result<(), ConfigError> {
    if windows.is_empty() {
        return Err(ConfigError::new(
            "recipient_windows",
            "expected at least one window",
        ));
    }
    for (index, window) in windows.iter().enumerate() {
        validate_window(window, &format!("recipient_windows[{index}]"))?;
    }
    Ok(())
}
