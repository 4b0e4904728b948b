//! How driver errors map onto [`StoreError`]: lock contention and I/O trouble are
//! `Unavailable` (retry later), anything else `Backend`.

use rusqlite::ErrorCode;
use sms_core::StoreError;

/// Lock contention and I/O trouble may pass; anything else is a bug or bad data.
pub(super) fn sqlite_error(e: rusqlite::Error) -> StoreError {
    let transient = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
        )
    );
    if transient {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Backend(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_io_errors_are_unavailable_others_backend() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(matches!(sqlite_error(busy), StoreError::Unavailable(_)));
        let constraint = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        );
        assert!(matches!(sqlite_error(constraint), StoreError::Backend(_)));
    }
}
