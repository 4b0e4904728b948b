//! How driver and pool errors map onto [`StoreError`]: a connection problem is
//! `Unavailable` (retry later), anything else `Backend`.

use std::error::Error as _;

use deadpool_postgres::PoolError;
use sms_core::StoreError;

/// Whether a driver error says the server could not be reached or dropped the
/// connection (worth retrying later) rather than that the statement or data was bad.
fn is_connection_problem(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(state) = e.code() {
        // 08: connection exception; 57: operator intervention (shutdown, cancelled by
        // timeout); 53: insufficient resources (too many connections); 40: serialization
        // failure or deadlock, which pass on retry.
        return ["08", "57", "53", "40"]
            .iter()
            .any(|class| state.code().starts_with(class));
    }
    // Without a SQLSTATE the error is either the transport (an I/O error below it) or a
    // local conversion. The driver does not expose its error kind, so I/O is looked for
    // in the source chain, and connect and timeout failures, which carry no source, are
    // recognised by their fixed wording.
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    let text = e.to_string();
    [
        "error connecting",
        "timeout",
        "error communicating",
        "connection closed",
    ]
    .iter()
    .any(|prefix| text.starts_with(prefix))
}

/// Maps a driver error onto the store's kinds. The driver's own message is often only
/// "db error" or "error connecting to server" with the substance in its source chain,
/// which `StoreError`'s message does not show, so the whole chain goes into the text:
/// `postgres: db error: ERROR: relation "messages" does not exist`.
pub(super) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let mut text = format!("postgres: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if is_connection_problem(&e) {
        StoreError::unavailable(text)
    } else {
        StoreError::backend(text)
    }
}

pub(super) fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_error(e),
        PoolError::Timeout(kind) => StoreError::unavailable(format!(
            "no postgres connection in time ({kind:?} timed out)"
        )),
        PoolError::Closed => StoreError::unavailable("postgres connection pool is closed"),
        PoolError::PostCreateHook(e) => StoreError::unavailable(e.to_string()),
        other => StoreError::backend(other.to_string()),
    }
}
