//! The SQL of the Postgres store, one constant per statement, so the queries can be
//! read together and checked against the indexes of `migrations/postgres/`.
//!
//! Statements name no schema: every pooled connection starts with `search_path` set to
//! the configured one.
//!
//! Leases are timed by `lease_end!`: each statement that starts one takes the time it
//! starts from as a parameter, the caller's `now` or NULL for the database's time
//! (`LeaseClock`), and its length in microseconds.

/// The columns of a message row, which [`message_from_row`] reads by name; `$p`
/// qualifies them when a statement joins another relation.
///
/// [`message_from_row`]: super::row::message_from_row
macro_rules! message_columns {
    ($p:literal) => {
        concat!(
            $p,
            "id, ",
            $p,
            "idempotency_key, ",
            $p,
            "template, ",
            $p,
            "args, ",
            $p,
            "recipients, ",
            $p,
            "expires_at, ",
            $p,
            "status, ",
            $p,
            "reason, ",
            $p,
            "attempts, ",
            $p,
            "max_attempts, ",
            $p,
            "next_attempt_at, ",
            $p,
            "lease_owner, ",
            $p,
            "lease_token, ",
            $p,
            "lease_expires_at, ",
            $p,
            "last_vendor, ",
            $p,
            "last_error, ",
            $p,
            "may_duplicate, ",
            $p,
            "pinned_vendor, ",
            $p,
            "created_at, ",
            $p,
            "updated_at, ",
            $p,
            "callback_url, ",
            $p,
            "resend_of, ",
            $p,
            "avoid_vendor, ",
            $p,
            "client, ",
            $p,
            "priority, ",
            $p,
            "send_at"
        )
    };
}

/// The time a lease starts from: parameter `$start`, the caller's `now`, or when it is
/// NULL the database's `statement_timestamp()`. That is the time the statement arrived,
/// one value for the whole statement (every row a claim leases gets the same end), and
/// a stable expression, so a claim's due check on it still bounds the index scan.
/// `clock_timestamp()` would be evaluated again for every row and could not bound the
/// scan; `now()` is the start of the transaction, earlier than the statement in a batch.
macro_rules! lease_clock {
    ($start:literal) => {
        concat!("coalesce(", $start, "::timestamptz, statement_timestamp())")
    };
}

/// The end of a lease of `$micros` microseconds from `lease_clock!($start)`; NULL
/// when `$micros` is NULL (a message stored unleased). The multiplication goes through
/// `float8`, exact for any lease under 285 years.
macro_rules! lease_end {
    ($start:literal, $micros:literal) => {
        concat!(
            lease_clock!($start),
            " + ",
            $micros,
            "::int8 * interval '1 microsecond'"
        )
    };
}

/// The insert of one message: it returns only the id (a row means it was inserted), the
/// answer is built from the message itself ([`stored_from_new`]). `pinned_vendor` is
/// left NULL, here and in [`INSERT_MANY`]: only a failed attempt pins a message. A
/// message stored leased has a lease of `$14` microseconds from `$19` (`lease_end!`).
///
/// [`stored_from_new`]: crate::codec::stored_from_new
pub(super) const INSERT_MESSAGE: &str = concat!(
    "INSERT INTO messages (id, idempotency_key, template, args, recipients, expires_at, \
     status, reason, attempts, max_attempts, next_attempt_at, lease_owner, lease_token, \
     lease_expires_at, last_vendor, last_error, may_duplicate, created_at, updated_at, \
     callback_url, resend_of, avoid_vendor, client, priority, send_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, ",
    lease_end!("$19", "$14"),
    ", $15, $16, $17, $18, $18, $20, $21, $22, $23, $24, $25) \
     ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
     RETURNING id"
);

/// The insert of a whole batch, one statement: the parameters are one array per column
/// (`args` and `recipients` as one JSON array text per message, since Postgres arrays
/// cannot be ragged). Rows go in ordered by idempotency key, and messages with the same
/// key in batch order: two batches sharing keys take the key locks in the same order
/// (so they cannot deadlock), and the first message of a repeated key is the one
/// stored, as one-by-one enqueues would store it. Only the ids of the inserted rows come
/// back: the answers are built from the messages themselves ([`stored_from_new`]).
///
/// [`stored_from_new`]: crate::codec::stored_from_new
pub(super) const INSERT_MANY: &str = concat!(
    "INSERT INTO messages (id, idempotency_key, template, args, recipients, expires_at, \
     status, reason, attempts, max_attempts, next_attempt_at, lease_owner, lease_token, \
     lease_expires_at, last_vendor, last_error, may_duplicate, created_at, updated_at, \
     callback_url, resend_of, avoid_vendor, client, priority, send_at) \
     SELECT b.id, b.idempotency_key, b.template, \
         ARRAY(SELECT a.v FROM jsonb_array_elements_text(b.args::jsonb) WITH ORDINALITY \
               AS a(v, n) ORDER BY a.n), \
         ARRAY(SELECT r.v FROM jsonb_array_elements_text(b.recipients::jsonb) WITH ORDINALITY \
               AS r(v, n) ORDER BY r.n), \
         b.expires_at, b.status, b.reason, b.attempts, b.max_attempts, b.next_attempt_at, \
         b.lease_owner, b.lease_token, ",
    lease_end!("b.lease_start", "b.lease_micros"),
    ", b.last_vendor, b.last_error, b.may_duplicate, b.created_at, b.created_at, \
         b.callback_url, b.resend_of, b.avoid_vendor, b.client, b.priority, b.send_at \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::timestamptz[], $7::text[], $8::text[], $9::int8[], $10::int8[], \
                 $11::timestamptz[], $12::text[], $13::uuid[], $14::int8[], $15::text[], \
                 $16::text[], $17::bool[], $18::timestamptz[], $19::timestamptz[], \
                 $20::text[], $21::uuid[], $22::text[], $23::text[], $24::text[], \
                 $25::timestamptz[]) \
         WITH ORDINALITY \
         AS b(id, idempotency_key, template, args, recipients, expires_at, status, reason, \
              attempts, max_attempts, next_attempt_at, lease_owner, lease_token, \
              lease_micros, last_vendor, last_error, may_duplicate, created_at, lease_start, \
              callback_url, resend_of, avoid_vendor, client, priority, send_at, ord) \
     ORDER BY b.idempotency_key, b.ord \
     ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
     RETURNING id"
);

/// The stored messages holding any of the given idempotency keys.
pub(super) const SELECT_BY_KEYS: &str = concat!(
    "SELECT ",
    message_columns!(""),
    " FROM messages WHERE idempotency_key = ANY($1)"
);

pub(super) const SELECT_BY_ID: &str = concat!(
    "SELECT ",
    message_columns!(""),
    " FROM messages WHERE id = $1"
);

pub(super) const SELECT_BY_KEY: &str = concat!(
    "SELECT ",
    message_columns!(""),
    " FROM messages WHERE idempotency_key = $1"
);

/// The pick of one lane of a claim: the lane's due messages at `lease_clock!($1)`,
/// oldest due first, at most `$limit`, locked, skipping rows another claimer has
/// locked. Its filter and order are the predicate of the partial index
/// `messages_claim_by_lane` and its key after the lane, so Postgres reads the lane's
/// range of the index from the oldest due row and stops after `$limit` rows, however
/// many final rows (or rows of the other lane) the table holds. `tests/it/postgres.rs`
/// checks the plan with EXPLAIN.
macro_rules! lane_pick {
    ($priority:literal, $limit:literal) => {
        concat!(
            "SELECT id, due_at FROM messages \
             WHERE status IN ('queued', 'leased') AND priority = '",
            $priority,
            "' AND due_at <= ",
            lease_clock!("$1"),
            " ORDER BY due_at, id LIMIT ",
            $limit,
            " FOR UPDATE SKIP LOCKED"
        )
    };
}

/// The claim, one statement. The CTE `high` picks and locks up to `$2` due
/// high-priority rows (the claim's limit less the room kept for normal ones); `normal`
/// then picks and locks normal rows up to the claim's limit `$7`, less what `high`
/// took; the UPDATE leases exactly those rows. A CTE with `FOR UPDATE` is never inlined
/// by the planner, so each `LIMIT` is applied once (an `id IN (subquery)` form may be
/// re-planned as a join) and `high` is run once though `normal` counts it. The rows
/// come back with their lane and previous due time, by which the answer is put in
/// claim order: high-priority first, each lane oldest due first.
///
/// `<time>` is `lease_clock!($1)`: due messages and lapsed leases are those of the
/// caller's `now`, or of the database's time when `$1` is NULL; the new lease runs `$5`
/// microseconds from the same time. `$6` dates the change.
pub(super) const CLAIM: &str = concat!(
    "WITH high AS (",
    lane_pick!("high", "$2"),
    "), normal AS (",
    lane_pick!("normal", "$7 - (SELECT count(*) FROM high)"),
    "), due AS ( \
         SELECT id, due_at, 0 AS lane FROM high \
         UNION ALL SELECT id, due_at, 1 AS lane FROM normal \
     ) \
     UPDATE messages AS m \
     SET status = 'leased', attempts = m.attempts + 1, lease_owner = $3, lease_token = $4, \
         lease_expires_at = ",
    lease_end!("$1", "$5"),
    ", updated_at = $6, \
         may_duplicate = (m.may_duplicate OR m.status = 'leased') \
     FROM due WHERE m.id = due.id \
     RETURNING due.lane AS claimed_lane, due.due_at AS claimed_due_at, ",
    message_columns!("m.")
);

/// The first due time of one lane: the first entry of its range of
/// `messages_claim_by_lane`.
macro_rules! lane_first_due {
    ($priority:literal) => {
        concat!(
            "(SELECT due_at FROM messages \
              WHERE status IN ('queued', 'leased') AND priority = '",
            $priority,
            "' ORDER BY due_at LIMIT 1)"
        )
    };
}

/// The earliest time a queued message falls due or a lease lapses: the earlier of the
/// two lanes' first due times (`least` ignores a lane with none; NULL when both are
/// empty). Two reads of one index entry each, however long the backlog.
pub(super) const NEXT_DUE: &str = concat!(
    "SELECT least(",
    lane_first_due!("high"),
    ", ",
    lane_first_due!("normal"),
    ")"
);

/// Cancels a queued message at `$2`. Only a queued message changes: a leased one is a
/// sender's, a final one is settled. As it leaves 'queued', its `due_at` becomes NULL
/// and it drops out of the claim's index.
pub(super) const CANCEL: &str = concat!(
    "UPDATE messages SET status = 'cancelled', updated_at = $2 \
     WHERE id = $1 AND status = 'queued' RETURNING ",
    message_columns!("")
);

/// The guard every change of a leased message carries: the row must still be leased
/// under the caller's token.
macro_rules! leased_under_token {
    () => {
        " WHERE id = $1 AND status = 'leased' AND lease_token = $2"
    };
}

/// Clears the lease columns; the check constraint insists on it outside `leased`.
macro_rules! drop_lease {
    () => {
        "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL"
    };
}

pub(super) const COMPLETE: &str = concat!(
    "UPDATE messages SET status = 'sent', last_vendor = $3, updated_at = $4, ",
    drop_lease!(),
    leased_under_token!()
);

/// [`COMPLETE`] for a batch, one statement: `$1` … `$4` are the ids, tokens, vendors and
/// times; answers the ids it marked sent. An id may appear once per statement.
///
/// A row holds a lease token only while it is leased (`messages_lease_matches_status`),
/// so matching the token is [`COMPLETE`]'s status test. Naming the status as well would
/// let the generic plan of this prepared statement pick the status indexes (a bitmap
/// of every leased row, and of every dead version of one that vacuum has not removed
/// yet) over one primary-key probe per id: under steady keyed traffic that plan cost
/// eight times the CPU of the rest of the send path.
pub(super) const COMPLETE_MANY: &str = "UPDATE messages AS m \
     SET status = 'sent', last_vendor = b.vendor, updated_at = b.at, \
         lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
     FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[]) AS b(id, token, vendor, at) \
     WHERE m.id = b.id AND m.lease_token = b.token \
     RETURNING m.id";

/// Requeues a leased message after a failed attempt. `$8` is the failure's pin
/// ([`codec::pinned_vendor`]): NULL clears an earlier one.
///
/// [`codec::pinned_vendor`]: crate::codec::pinned_vendor
pub(super) const FAIL: &str = concat!(
    "UPDATE messages SET status = 'queued', last_vendor = COALESCE($3, last_vendor), \
     last_error = $4, may_duplicate = may_duplicate OR $5, next_attempt_at = $6, updated_at = $7, \
     pinned_vendor = $8, ",
    drop_lease!(),
    leased_under_token!()
);

/// Marks a leased message dead; `$7` is the failure's pin, as in [`FAIL`].
pub(super) const DEAD: &str = concat!(
    "UPDATE messages SET status = 'dead', last_vendor = COALESCE($3, last_vendor), \
     last_error = $4, may_duplicate = may_duplicate OR $5, updated_at = $6, pinned_vendor = $7, ",
    drop_lease!(),
    leased_under_token!()
);

pub(super) const EXPIRE: &str = concat!(
    "UPDATE messages SET status = 'expired', updated_at = $3, ",
    drop_lease!(),
    leased_under_token!()
);

/// Requeues a leased message unattempted, due at `$3`, dated `$4`: the claim's attempt
/// is given back, the message was never tried. A release is this with `$3` = `$4`.
/// `$3` is the caller's time under either `LeaseClock`, as every due time written is.
pub(super) const DEFER: &str = concat!(
    "UPDATE messages SET status = 'queued', attempts = GREATEST(attempts - 1, 0), \
     next_attempt_at = $3, updated_at = $4, ",
    drop_lease!(),
    leased_under_token!()
);

/// Moves a leased message's lease end to `$4` microseconds from `lease_clock!($3)`,
/// guarded by its lease token; `$5` dates the change. Answers the owner and the stored
/// end, so the caller can hand back the whole lease.
pub(super) const RENEW: &str = concat!(
    "UPDATE messages SET lease_expires_at = ",
    lease_end!("$3", "$4"),
    ", updated_at = $5",
    leased_under_token!(),
    " RETURNING lease_owner, lease_expires_at"
);

/// Takes the recipients in `$3` off a leased message, keeping the others in their order;
/// `$4` dates the change. Besides the lease token it is guarded by some recipient being
/// left (`recipients <@ $3`: every one is among those sent), so a narrowing to nobody
/// changes no row rather than breaking the CHECK on `recipients` with an error that does
/// not say why. Numbers are compared as stored, in E.164.
pub(super) const NARROW: &str = concat!(
    "UPDATE messages SET recipients = ARRAY( \
         SELECT r.v FROM unnest(recipients) WITH ORDINALITY AS r(v, n) \
         WHERE r.v <> ALL($3::text[]) ORDER BY r.n), \
     updated_at = $4",
    leased_under_token!(),
    " AND NOT (recipients <@ $3::text[])"
);

/// Whether message `$1` is leased under token `$2`; no row when it is not stored. Tells
/// why a guarded update that also checks something else ([`NARROW`]) changed nothing.
pub(super) const HELD_UNDER_TOKEN: &str = "SELECT coalesce(status = 'leased' AND lease_token = $2, false) \
     FROM messages WHERE id = $1";

/// An operator's retry starts afresh: new attempts and no pin (the refusal that pinned
/// the message belongs to the attempts it ran out of).
pub(super) const RETRY: &str = concat!(
    "UPDATE messages SET status = 'queued', attempts = 0, reason = 'manual_retry', \
     pinned_vendor = NULL, next_attempt_at = $2, updated_at = $2 \
     WHERE id = $1 AND status IN ('dead', 'expired') RETURNING ",
    message_columns!("")
);

pub(super) const STATUS_OF: &str = "SELECT status FROM messages WHERE id = $1";

/// Which of the given ids are stored (tells `NotFound` from `LeaseLost` for a batch).
pub(super) const EXISTING_IDS: &str = "SELECT id FROM messages WHERE id = ANY($1)";

pub(super) const LIST: &str = concat!(
    "SELECT ",
    message_columns!(""),
    " FROM messages WHERE status = $1 ORDER BY created_at, id LIMIT $2"
);

/// The messages of client `$1` in status `$2`, oldest first, at most `$3`: one range of
/// the partial index `messages_client_status_created`, in its order.
pub(super) const LIST_FOR_CLIENT: &str = concat!(
    "SELECT ",
    message_columns!(""),
    " FROM messages WHERE client = $1 AND status = $2 ORDER BY created_at, id LIMIT $3"
);

pub(super) const STATS: &str = "SELECT status, count(*) FROM messages GROUP BY status";

pub(super) const PURGE_SENT: &str = "DELETE FROM messages WHERE id IN ( \
         SELECT id FROM messages WHERE status = 'sent' AND updated_at < $1 \
         ORDER BY updated_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)";

pub(super) const USAGE_ADD: &str = "INSERT INTO usage (vendor, period, billed) VALUES ($1, $2, $3) \
     ON CONFLICT (vendor, period) DO UPDATE SET billed = usage.billed + EXCLUDED.billed \
     RETURNING billed";

pub(super) const USAGE_TOTALS: &str = "SELECT vendor, billed FROM usage WHERE period = $1";

/// Records sends, one row per recipient; fills in a row a receipt made first, and leaves
/// a recorded send as it is. Returns the rows it wrote: those with a receipt
/// (`receipt_at` set) are kept receipts this record settled.
pub(super) const DELIVERIES_SENT: &str = "INSERT INTO deliveries \
     (vendor, vendor_message_id, recipient, message_id, sent_at, callback_url, \
      billed_segments) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[], \
                          $6::text[], $7::integer[]) \
     ON CONFLICT (vendor, vendor_message_id, recipient) DO UPDATE \
     SET message_id = excluded.message_id, sent_at = excluded.sent_at, \
         callback_url = excluded.callback_url, billed_segments = excluded.billed_segments \
     WHERE deliveries.message_id IS NULL \
     RETURNING vendor, vendor_message_id, recipient, state, code, description, reported_at, \
         segments, receipt_at";

/// Applies a receipt to a row no receipt has settled, making the row if there is none.
/// Returns the recorded send it settled: when it was accepted (NULL: not recorded yet),
/// its message and its callback URL; no row back means the row was settled already.
pub(super) const DELIVERY_RECEIPT: &str = "INSERT INTO deliveries \
     (vendor, vendor_message_id, recipient, state, code, description, reported_at, \
      receipt_at, segments) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (vendor, vendor_message_id, recipient) DO UPDATE \
     SET state = excluded.state, code = excluded.code, description = excluded.description, \
         reported_at = excluded.reported_at, receipt_at = excluded.receipt_at, \
         segments = excluded.segments \
     WHERE deliveries.receipt_at IS NULL \
     RETURNING sent_at, message_id, callback_url, billed_segments";

/// A message's recipients, oldest send first.
pub(super) const DELIVERIES_OF: &str = "SELECT recipient, vendor, vendor_message_id, state, \
     code, description, sent_at, reported_at, receipt_at, segments FROM deliveries \
     WHERE message_id = $1 ORDER BY sent_at, recipient";

/// The sends to one number since a time, newest first: the columns of
/// [`DELIVERIES_OF`], then the message.
pub(super) const DELIVERIES_TO: &str = "SELECT recipient, vendor, vendor_message_id, state, \
     code, description, sent_at, reported_at, receipt_at, segments, message_id \
     FROM deliveries WHERE recipient = $1 AND message_id IS NOT NULL AND sent_at >= $2 \
     ORDER BY sent_at DESC LIMIT $3";

/// The sends to vendor `$1` still without a receipt, accepted after `$2` and before
/// `$3`, oldest first, at most `$4`. Its filter is the predicate of the partial index
/// `deliveries_unsettled` and its order the index's key after the vendor (the ids
/// compared byte by byte, as the index has them), so Postgres walks the vendor's range
/// of the index and stops after `$4` rows, however many settled sends the table holds.
/// `tests/it/delivery.rs` checks the plan with EXPLAIN.
pub(super) const UNSETTLED: &str = "SELECT vendor_message_id, recipient, sent_at \
     FROM deliveries \
     WHERE vendor = $1 AND state = 'sent' AND message_id IS NOT NULL \
       AND sent_at > $2 AND sent_at < $3 \
     ORDER BY sent_at, vendor_message_id COLLATE \"C\", recipient COLLATE \"C\" LIMIT $4";

/// Deletes up to a number of recorded sends older than a time.
pub(super) const PURGE_DELIVERIES_SENT: &str = "DELETE FROM deliveries \
     WHERE (vendor, vendor_message_id, recipient) IN (SELECT vendor, vendor_message_id, \
     recipient FROM deliveries WHERE message_id IS NOT NULL AND sent_at < $1 LIMIT $2)";

/// Deletes up to a number of kept receipts, received before a time, that never found
/// their send.
pub(super) const PURGE_DELIVERIES_UNMATCHED: &str = "DELETE FROM deliveries \
     WHERE (vendor, vendor_message_id, recipient) IN (SELECT vendor, vendor_message_id, \
     recipient FROM deliveries WHERE message_id IS NULL AND receipt_at < $1 LIMIT $2)";

/// Stores a batch of callback events, one statement: the parameters are one array per
/// column. Each event is due at its creation; an id stored already keeps its row, and
/// an id repeated in the batch is stored as its first copy. Rows go in ordered by id, so
/// two batches sharing ids take their locks in the same order and cannot deadlock.
pub(super) const CALLBACK_INSERT: &str = "INSERT INTO callbacks \
     (id, message_id, status, url, body, created_at, due_at) \
     SELECT e.id, e.message_id, e.status, e.url, e.body, e.created_at, e.created_at \
     FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
                 $6::timestamptz[]) WITH ORDINALITY \
         AS e(id, message_id, status, url, body, created_at, ord) \
     ORDER BY e.id, e.ord \
     ON CONFLICT (id) DO NOTHING";

/// The pick of a callback claim: the pending events due at `$1`, oldest due first, at
/// most `$2`, locked, skipping those another claim has locked. Its filter and order are exactly the predicate and key of the partial
/// index `callbacks_claim`, so Postgres walks the index from the oldest due event and
/// stops after `$2` rows, however many settled events the table holds.
/// `tests/it/callback.rs` checks the plan with EXPLAIN.
macro_rules! callback_pick {
    () => {
        "SELECT id, due_at FROM callbacks \
         WHERE state = 'pending' AND due_at <= $1 \
         ORDER BY due_at, id LIMIT $2 \
         FOR UPDATE SKIP LOCKED"
    };
}

/// [`CALLBACK_CLAIM`]'s pick on its own, for EXPLAIN.
pub(super) const CALLBACK_PICK: &str = callback_pick!();

/// The callback claim, one statement. The CTE is the pick; the UPDATE leases exactly
/// the events it picked: one more attempt, due again when the lease `$3` ends, held by
/// owner `$4` under a token of each event's own. A CTE with `FOR UPDATE` is never
/// inlined, so its `LIMIT` holds (an `id IN (subquery)` form can be re-evaluated under
/// concurrent updates and lease more rows than asked for); it also hands back each
/// event's due time before the claim, by which the answer is put oldest due first.
pub(super) const CALLBACK_CLAIM: &str = concat!(
    "WITH due AS (",
    callback_pick!(),
    ") \
     UPDATE callbacks AS c \
     SET attempts = c.attempts + 1, due_at = $3, lease_owner = $4, \
         lease_token = gen_random_uuid() \
     FROM due WHERE c.id = due.id \
     RETURNING due.due_at AS claimed_due_at, c.id, c.message_id, c.status, c.url, c.body, \
         c.created_at, c.attempts, c.lease_token"
);

/// The guard of every settle: the event is pending and still claimed under the
/// caller's token (a lapsed lease claimed again has another).
macro_rules! claimed_under_token {
    () => {
        " WHERE id = $1 AND state = 'pending' AND lease_token = $2"
    };
}

/// The endpoint took the event: settled at `$3`, never claimed again.
pub(super) const CALLBACK_DELIVERED: &str = concat!(
    "UPDATE callbacks SET state = 'delivered', settled_at = $3, \
     lease_owner = NULL, lease_token = NULL",
    claimed_under_token!()
);

/// The attempt failed: pending again, due at `$3`, with the error `$4`.
pub(super) const CALLBACK_RETRY: &str = concat!(
    "UPDATE callbacks SET due_at = $3, last_error = $4, lease_owner = NULL, lease_token = NULL",
    claimed_under_token!()
);

/// The attempt failed for good: settled at `$3` with the error `$4`.
pub(super) const CALLBACK_FAILED: &str = concat!(
    "UPDATE callbacks SET state = 'failed', settled_at = $3, last_error = $4, \
     lease_owner = NULL, lease_token = NULL",
    claimed_under_token!()
);

pub(super) const CALLBACK_COUNTS: &str = "SELECT state, count(*) FROM callbacks GROUP BY state";

/// Deletes up to `$2` settled events made before `$1`, oldest first, along the partial
/// index `callbacks_settled`. Skipping locked rows lets two purges at once delete
/// different events rather than one waiting for the other's.
pub(super) const CALLBACK_PURGE: &str = "WITH old AS ( \
         SELECT id FROM callbacks WHERE state <> 'pending' AND created_at < $1 \
         ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
     DELETE FROM callbacks AS c USING old WHERE c.id = old.id";
