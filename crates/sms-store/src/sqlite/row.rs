//! Row codec of the SQLite store: a `messages` row back into a [`StoredMessage`], and a
//! message into the columns of the insert.
//!
//! Arguments and recipients are stored as JSON arrays, so any text survives; times as
//! integer microseconds since the epoch, the precision the Postgres store keeps too.

use chrono::{DateTime, Utc};
use rusqlite::Row;
use rusqlite::types::ToSql;
use sms_core::{Lease, LeaseToken, MessageId, StoreError, StoredMessage, VendorId};

use crate::codec;

/// A message row as SQLite hands it over, before domain validation (which needs
/// [`StoreError`], not the driver's error type the row callback must return).
pub(super) struct MessageRow {
    id: String,
    idempotency_key: Option<String>,
    template: String,
    args: String,
    recipients: String,
    expires_at: Option<i64>,
    status: String,
    reason: String,
    attempts: i64,
    max_attempts: i64,
    next_attempt_at: i64,
    lease_owner: Option<String>,
    lease_token: Option<String>,
    lease_expires_at: Option<i64>,
    last_vendor: Option<String>,
    last_error: Option<String>,
    may_duplicate: bool,
    pinned_vendor: Option<String>,
    created_at: i64,
    updated_at: i64,
    callback_url: Option<String>,
    resend_of: Option<String>,
    avoid_vendor: Option<String>,
    client: Option<String>,
    priority: String,
    send_at: Option<i64>,
}

impl MessageRow {
    /// Reads a row selected with the message columns of [`super::statements`], by
    /// position (a look-up by name compares column names for every value).
    pub(super) fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            idempotency_key: row.get(1)?,
            template: row.get(2)?,
            args: row.get(3)?,
            recipients: row.get(4)?,
            expires_at: row.get(5)?,
            status: row.get(6)?,
            reason: row.get(7)?,
            attempts: row.get(8)?,
            max_attempts: row.get(9)?,
            next_attempt_at: row.get(10)?,
            lease_owner: row.get(11)?,
            lease_token: row.get(12)?,
            lease_expires_at: row.get(13)?,
            last_vendor: row.get(14)?,
            last_error: row.get(15)?,
            may_duplicate: row.get(16)?,
            pinned_vendor: row.get(17)?,
            created_at: row.get(18)?,
            updated_at: row.get(19)?,
            callback_url: row.get(20)?,
            resend_of: row.get(21)?,
            avoid_vendor: row.get(22)?,
            client: row.get(23)?,
            priority: row.get(24)?,
            send_at: row.get(25)?,
        })
    }

    /// Validates the columns as the domain types require.
    pub(super) fn into_message(self) -> Result<StoredMessage, StoreError> {
        let request = codec::RequestColumns {
            template: self.template,
            args: json_list("args", &self.args)?,
            recipients: json_list("recipients", &self.recipients)?,
            idempotency_key: self.idempotency_key,
            expires_at: self.expires_at.map(|t| time("expires_at", t)).transpose()?,
            callback_url: self.callback_url,
            resend_of: self
                .resend_of
                .map(|id| uuid("resend_of", &id).map(MessageId::from_uuid))
                .transpose()?,
            avoid_vendor: self.avoid_vendor,
            client: self.client,
            priority: self.priority,
            send_at: self.send_at.map(|t| time("send_at", t)).transpose()?,
        }
        .into_request()?;
        let lease = match (self.lease_owner, self.lease_token, self.lease_expires_at) {
            (Some(owner), Some(token), Some(expires_at)) => Some(Lease {
                owner,
                token: LeaseToken(uuid("lease_token", &token)?),
                expires_at: time("lease_expires_at", expires_at)?,
            }),
            _ => None,
        };
        Ok(StoredMessage {
            id: MessageId::from_uuid(uuid("id", &self.id)?),
            request,
            status: codec::status(&self.status)?,
            reason: codec::reason(&self.reason)?,
            attempts: codec::count("attempts", self.attempts)?,
            max_attempts: codec::count("max_attempts", self.max_attempts)?,
            next_attempt_at: time("next_attempt_at", self.next_attempt_at)?,
            lease,
            last_vendor: codec::vendor(self.last_vendor)?,
            last_error: self.last_error,
            may_duplicate: self.may_duplicate,
            pinned_vendor: codec::vendor(self.pinned_vendor)?,
            created_at: time("created_at", self.created_at)?,
            updated_at: time("updated_at", self.updated_at)?,
        })
    }
}

pub(super) fn json_list(column: &str, text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::backend(format!(
            "stored {column} is invalid: expected a JSON array of strings: {e}"
        ))
    })
}

pub(super) fn to_json(list: &[impl serde::Serialize]) -> Result<String, StoreError> {
    serde_json::to_string(list).map_err(StoreError::backend)
}

pub(super) fn uuid(column: &str, text: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::parse_str(text).map_err(|e| {
        StoreError::backend(format!(
            "stored {column} is invalid: expected a UUID, found {text:?}: {e}"
        ))
    })
}

/// Times are stored as microseconds, Postgres' precision, so both backends agree.
pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(super) fn time(column: &str, micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        StoreError::backend(format!(
            "stored {column} is invalid: {micros} µs is out of range"
        ))
    })
}

/// The columns of a message to insert: the converted ones, and the rest borrowed.
pub(super) struct InsertRow<'a> {
    id: String,
    key: Option<&'a str>,
    template: &'a str,
    args: String,
    recipients: String,
    expires_at: Option<i64>,
    status: &'static str,
    reason: &'static str,
    attempts: i64,
    max_attempts: i64,
    next_attempt_at: i64,
    lease_owner: Option<&'a str>,
    lease_token: Option<String>,
    lease_expires_at: Option<i64>,
    last_vendor: Option<&'a str>,
    last_error: Option<&'a str>,
    may_duplicate: bool,
    created_at: i64,
    callback_url: Option<&'a str>,
    resend_of: Option<String>,
    avoid_vendor: Option<&'a str>,
    client: Option<&'a str>,
    priority: &'static str,
    send_at: Option<i64>,
}

impl<'a> InsertRow<'a> {
    /// Runs `statement` (an insert with the parameters of [`INSERT`]) for this row.
    ///
    /// [`INSERT`]: super::statements::INSERT
    pub(super) fn execute(
        &self,
        statement: &mut rusqlite::Statement<'_>,
    ) -> rusqlite::Result<usize> {
        statement.execute(&self.params()[..])
    }

    /// `?1` … `?24` of [`INSERT`], in order.
    ///
    /// [`INSERT`]: super::statements::INSERT
    pub(super) fn params(&self) -> [&dyn ToSql; 24] {
        [
            &self.id,
            &self.key,
            &self.template,
            &self.args,
            &self.recipients,
            &self.expires_at,
            &self.status,
            &self.reason,
            &self.attempts,
            &self.max_attempts,
            &self.next_attempt_at,
            &self.lease_owner,
            &self.lease_token,
            &self.lease_expires_at,
            &self.last_vendor,
            &self.last_error,
            &self.may_duplicate,
            &self.created_at,
            &self.callback_url,
            &self.resend_of,
            &self.avoid_vendor,
            &self.client,
            &self.priority,
            &self.send_at,
        ]
    }

    /// The row of a message built by [`codec::stored_from_new`] (status, lease and
    /// vendor already resolved from its initial state).
    pub(super) fn new(m: &'a StoredMessage) -> Result<Self, StoreError> {
        let request = &m.request;
        let lease = m.lease.as_ref();
        Ok(Self {
            id: m.id.to_string(),
            key: codec::key_column(request),
            template: request.template().as_str(),
            args: to_json(request.args())?,
            recipients: to_json(request.recipients())?,
            expires_at: request.expires_at().map(micros),
            status: m.status.as_str(),
            reason: m.reason.as_str(),
            attempts: i64::from(m.attempts),
            max_attempts: i64::from(m.max_attempts),
            next_attempt_at: micros(m.next_attempt_at),
            lease_owner: lease.map(|l| l.owner.as_str()),
            lease_token: lease.map(|l| l.token.0.to_string()),
            lease_expires_at: lease.map(|l| micros(l.expires_at)),
            last_vendor: m.last_vendor.as_ref().map(VendorId::as_str),
            last_error: m.last_error.as_deref(),
            may_duplicate: m.may_duplicate,
            created_at: micros(m.created_at),
            callback_url: codec::callback_url_column(request),
            resend_of: codec::resend_of_column(request).map(MessageId::to_string),
            avoid_vendor: codec::avoid_vendor_column(request),
            client: codec::client_column(request),
            priority: codec::priority_column(request),
            send_at: request.send_at().map(micros),
        })
    }
}
