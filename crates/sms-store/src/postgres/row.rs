//! Row codec of the Postgres store: a `messages` row back into a [`StoredMessage`], and
//! a message into the parameters of the inserts.

use chrono::{DateTime, Utc};
use sms_core::{Lease, LeaseToken, MessageId, StoreError, StoredMessage, VendorId};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::config::LeaseClock;
use super::error::pg_error;
use super::lease;
use crate::codec;

/// Reads a row selected with the message columns of [`super::statements`], by column
/// name, validating every value as the domain types require.
pub(super) fn message_from_row(row: &Row) -> Result<StoredMessage, StoreError> {
    let get_err = pg_error;
    let request = codec::RequestColumns {
        template: row.try_get("template").map_err(get_err)?,
        args: row.try_get("args").map_err(get_err)?,
        recipients: row.try_get("recipients").map_err(get_err)?,
        idempotency_key: row.try_get("idempotency_key").map_err(get_err)?,
        expires_at: row.try_get("expires_at").map_err(get_err)?,
        callback_url: row.try_get("callback_url").map_err(get_err)?,
        resend_of: row
            .try_get::<_, Option<uuid::Uuid>>("resend_of")
            .map_err(get_err)?
            .map(MessageId::from_uuid),
        avoid_vendor: row.try_get("avoid_vendor").map_err(get_err)?,
        client: row.try_get("client").map_err(get_err)?,
        priority: row.try_get("priority").map_err(get_err)?,
        send_at: row.try_get("send_at").map_err(get_err)?,
    }
    .into_request()?;
    let lease_owner: Option<String> = row.try_get("lease_owner").map_err(get_err)?;
    let lease_token: Option<uuid::Uuid> = row.try_get("lease_token").map_err(get_err)?;
    let lease_expires_at: Option<DateTime<Utc>> =
        row.try_get("lease_expires_at").map_err(get_err)?;
    let lease = match (lease_owner, lease_token, lease_expires_at) {
        (Some(owner), Some(token), Some(expires_at)) => Some(Lease {
            owner,
            token: LeaseToken(token),
            expires_at,
        }),
        _ => None,
    };
    Ok(StoredMessage {
        id: MessageId::from_uuid(row.try_get("id").map_err(get_err)?),
        request,
        status: codec::status(row.try_get("status").map_err(get_err)?)?,
        reason: codec::reason(row.try_get("reason").map_err(get_err)?)?,
        attempts: codec::count("attempts", row.try_get("attempts").map_err(get_err)?)?,
        max_attempts: codec::count(
            "max_attempts",
            row.try_get("max_attempts").map_err(get_err)?,
        )?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(get_err)?,
        lease,
        last_vendor: codec::vendor(row.try_get("last_vendor").map_err(get_err)?)?,
        last_error: row.try_get("last_error").map_err(get_err)?,
        may_duplicate: row.try_get("may_duplicate").map_err(get_err)?,
        pinned_vendor: codec::vendor(row.try_get("pinned_vendor").map_err(get_err)?)?,
        created_at: row.try_get("created_at").map_err(get_err)?,
        updated_at: row.try_get("updated_at").map_err(get_err)?,
    })
}

/// The parameters of [`INSERT_MESSAGE`] for one message, borrowed from it.
///
/// A lease is written as its length from the message's creation and the time it starts
/// from: the creation time for [`LeaseClock::Caller`], which gives back the lease's end
/// exactly, or NULL for the database's time.
///
/// [`INSERT_MESSAGE`]: super::statements::INSERT_MESSAGE
pub(super) struct InsertParams<'a> {
    pub(super) id: &'a uuid::Uuid,
    pub(super) key: Option<&'a str>,
    template: &'a str,
    args: &'a [String],
    recipients: Vec<&'a str>,
    expires_at: Option<DateTime<Utc>>,
    status: &'static str,
    reason: &'static str,
    attempts: i64,
    max_attempts: i64,
    next_attempt_at: DateTime<Utc>,
    lease_owner: Option<&'a str>,
    lease_token: Option<uuid::Uuid>,
    lease_micros: Option<i64>,
    last_vendor: Option<&'a str>,
    last_error: Option<&'a str>,
    may_duplicate: bool,
    created_at: DateTime<Utc>,
    lease_start: Option<DateTime<Utc>>,
    callback_url: Option<&'a str>,
    resend_of: Option<uuid::Uuid>,
    avoid_vendor: Option<&'a str>,
    client: Option<&'a str>,
    priority: &'static str,
    send_at: Option<DateTime<Utc>>,
}

impl<'a> InsertParams<'a> {
    /// The parameters of a message built by [`codec::stored_from_new`] (status, lease
    /// and vendor already resolved from its initial state), its lease timed by `clock`.
    pub(super) fn new(m: &'a StoredMessage, clock: LeaseClock) -> Self {
        let request = &m.request;
        let lease = m.lease.as_ref();
        Self {
            id: m.id.as_uuid(),
            key: codec::key_column(request),
            template: request.template().as_str(),
            args: request.args(),
            recipients: request.recipients().iter().map(|r| r.as_str()).collect(),
            expires_at: request.expires_at(),
            status: m.status.as_str(),
            reason: m.reason.as_str(),
            attempts: i64::from(m.attempts),
            max_attempts: i64::from(m.max_attempts),
            next_attempt_at: m.next_attempt_at,
            lease_owner: lease.map(|l| l.owner.as_str()),
            lease_token: lease.map(|l| l.token.0),
            // Both times are whole microseconds (`stored_from_new`): the length is exact.
            lease_micros: lease.map(|l| {
                l.expires_at
                    .timestamp_micros()
                    .saturating_sub(m.created_at.timestamp_micros())
            }),
            last_vendor: m.last_vendor.as_ref().map(VendorId::as_str),
            last_error: m.last_error.as_deref(),
            may_duplicate: m.may_duplicate,
            created_at: m.created_at,
            lease_start: lease::start(clock, m.created_at),
            callback_url: codec::callback_url_column(request),
            resend_of: codec::resend_of_column(request).map(|id| *id.as_uuid()),
            avoid_vendor: codec::avoid_vendor_column(request),
            client: codec::client_column(request),
            priority: codec::priority_column(request),
            send_at: request.send_at(),
        }
    }

    /// `$1` … `$25` of `INSERT_MESSAGE`.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 25] {
        [
            self.id,
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
            &self.lease_micros,
            &self.last_vendor,
            &self.last_error,
            &self.may_duplicate,
            &self.created_at,
            &self.lease_start,
            &self.callback_url,
            &self.resend_of,
            &self.avoid_vendor,
            &self.client,
            &self.priority,
            &self.send_at,
        ]
    }
}

/// The parameters of [`INSERT_MANY`]: one array per column, in batch order.
///
/// [`INSERT_MANY`]: super::statements::INSERT_MANY
pub(super) struct BatchColumns<'a> {
    id: Vec<uuid::Uuid>,
    key: Vec<Option<&'a str>>,
    template: Vec<&'a str>,
    args: Vec<String>,
    recipients: Vec<String>,
    expires_at: Vec<Option<DateTime<Utc>>>,
    status: Vec<&'static str>,
    reason: Vec<&'static str>,
    attempts: Vec<i64>,
    max_attempts: Vec<i64>,
    next_attempt_at: Vec<DateTime<Utc>>,
    lease_owner: Vec<Option<&'a str>>,
    lease_token: Vec<Option<uuid::Uuid>>,
    lease_micros: Vec<Option<i64>>,
    last_vendor: Vec<Option<&'a str>>,
    last_error: Vec<Option<&'a str>>,
    may_duplicate: Vec<bool>,
    created_at: Vec<DateTime<Utc>>,
    lease_start: Vec<Option<DateTime<Utc>>>,
    callback_url: Vec<Option<&'a str>>,
    resend_of: Vec<Option<uuid::Uuid>>,
    avoid_vendor: Vec<Option<&'a str>>,
    client: Vec<Option<&'a str>>,
    priority: Vec<&'static str>,
    send_at: Vec<Option<DateTime<Utc>>>,
}

impl<'a> BatchColumns<'a> {
    pub(super) fn new(rows: &[InsertParams<'a>]) -> Result<Self, StoreError> {
        fn json<T: serde::Serialize>(list: &[T]) -> Result<String, StoreError> {
            serde_json::to_string(list).map_err(StoreError::backend)
        }
        Ok(Self {
            id: rows.iter().map(|r| *r.id).collect(),
            key: rows.iter().map(|r| r.key).collect(),
            template: rows.iter().map(|r| r.template).collect(),
            args: rows
                .iter()
                .map(|r| json(r.args))
                .collect::<Result<_, _>>()?,
            recipients: rows
                .iter()
                .map(|r| json(&r.recipients))
                .collect::<Result<_, _>>()?,
            expires_at: rows.iter().map(|r| r.expires_at).collect(),
            status: rows.iter().map(|r| r.status).collect(),
            reason: rows.iter().map(|r| r.reason).collect(),
            attempts: rows.iter().map(|r| r.attempts).collect(),
            max_attempts: rows.iter().map(|r| r.max_attempts).collect(),
            next_attempt_at: rows.iter().map(|r| r.next_attempt_at).collect(),
            lease_owner: rows.iter().map(|r| r.lease_owner).collect(),
            lease_token: rows.iter().map(|r| r.lease_token).collect(),
            lease_micros: rows.iter().map(|r| r.lease_micros).collect(),
            last_vendor: rows.iter().map(|r| r.last_vendor).collect(),
            last_error: rows.iter().map(|r| r.last_error).collect(),
            may_duplicate: rows.iter().map(|r| r.may_duplicate).collect(),
            created_at: rows.iter().map(|r| r.created_at).collect(),
            lease_start: rows.iter().map(|r| r.lease_start).collect(),
            callback_url: rows.iter().map(|r| r.callback_url).collect(),
            resend_of: rows.iter().map(|r| r.resend_of).collect(),
            avoid_vendor: rows.iter().map(|r| r.avoid_vendor).collect(),
            client: rows.iter().map(|r| r.client).collect(),
            priority: rows.iter().map(|r| r.priority).collect(),
            send_at: rows.iter().map(|r| r.send_at).collect(),
        })
    }

    /// `$1` … `$25` of `INSERT_MANY`.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 25] {
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
            &self.lease_micros,
            &self.last_vendor,
            &self.last_error,
            &self.may_duplicate,
            &self.created_at,
            &self.lease_start,
            &self.callback_url,
            &self.resend_of,
            &self.avoid_vendor,
            &self.client,
            &self.priority,
            &self.send_at,
        ]
    }
}
