-- Clients, lanes and schedules.
--
-- - `client`: the named client that sent the message; NULL for an unnamed one.
-- - `priority`: the message's lane, 'high' (login codes) or 'normal' (everything
--   else). A claim takes due high-priority messages before normal ones.
-- - `send_at`: the time the client scheduled the message for; NULL unless scheduled.
--   The message is queued with that time as its next attempt, so the claim needs no
--   other column to hold it back.
--
-- A client may cancel a message still queued: it becomes 'cancelled', final, and its
-- `due_at` is NULL, as for every status but 'queued' and 'leased', so no claim sees it
-- again. A message scheduled by its client waits with the reason 'scheduled'. The
-- CHECKs on `status` and `reason` accept the new values (still comparisons joined by
-- OR: an `IN` list of more than two constants would build a temporary B-tree at every
-- write).
--
-- SQLite cannot change a constraint in place, so the table is rebuilt by its
-- documented procedure (https://www.sqlite.org/lang_altertable.html#otheralter): a new
-- table, the rows copied, the old table dropped, the new one renamed, and the indexes
-- made again. It runs inside the migration's transaction. The schema has no foreign
-- keys, triggers or views, so none is to be switched off or made again. Every column of
-- the table before is kept: the first schema's, `pinned_vendor` (migration 4),
-- `callback_url` (migration 6), `resend_of` and `avoid_vendor` with the CHECK that sets
-- them together (migration 7).

CREATE TABLE messages_next (
    id               TEXT    PRIMARY KEY NOT NULL,
    idempotency_key  TEXT,
    template         TEXT    NOT NULL,
    args             TEXT    NOT NULL,
    recipients       TEXT    NOT NULL,
    expires_at       INTEGER,
    status           TEXT    NOT NULL
                     CHECK (status = 'queued' OR status = 'leased' OR status = 'sent'
                            OR status = 'dead' OR status = 'expired'
                            OR status = 'cancelled'),
    reason           TEXT    NOT NULL
                     CHECK (reason = 'rate_limited' OR reason = 'vendor_throttled'
                            OR reason = 'vendor_failed' OR reason = 'timed_out'
                            OR reason = 'accepted' OR reason = 'manual_retry'
                            OR reason = 'recipient_refused' OR reason = 'scheduled'),
    attempts         INTEGER NOT NULL CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 0),
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    last_vendor      TEXT,
    last_error       TEXT,
    may_duplicate    INTEGER NOT NULL DEFAULT 0 CHECK (may_duplicate IN (0, 1)),
    pinned_vendor    TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    callback_url     TEXT,
    resend_of        TEXT,
    avoid_vendor     TEXT,
    client           TEXT,
    priority         TEXT    NOT NULL DEFAULT 'normal'
                     CHECK (priority = 'high' OR priority = 'normal'),
    send_at          INTEGER,
    -- When the message becomes claimable, derived so that it cannot drift from status.
    due_at           INTEGER GENERATED ALWAYS AS (
                         CASE status
                             WHEN 'queued' THEN next_attempt_at
                             WHEN 'leased' THEN lease_expires_at
                         END
                     ) STORED,
    CHECK (
        CASE WHEN status = 'leased'
            THEN lease_owner IS NOT NULL AND lease_token IS NOT NULL AND lease_expires_at IS NOT NULL
            ELSE lease_owner IS NULL AND lease_token IS NULL AND lease_expires_at IS NULL
        END
    ),
    CHECK ((resend_of IS NULL) = (avoid_vendor IS NULL))
);

-- Every stored message is an unnamed client's, in the normal lane, and unscheduled.
INSERT INTO messages_next (id, idempotency_key, template, args, recipients, expires_at,
    status, reason, attempts, max_attempts, next_attempt_at, lease_owner, lease_token,
    lease_expires_at, last_vendor, last_error, may_duplicate, pinned_vendor, created_at,
    updated_at, callback_url, resend_of, avoid_vendor)
SELECT id, idempotency_key, template, args, recipients, expires_at,
    status, reason, attempts, max_attempts, next_attempt_at, lease_owner, lease_token,
    lease_expires_at, last_vendor, last_error, may_duplicate, pinned_vendor, created_at,
    updated_at, callback_url, resend_of, avoid_vendor
FROM messages;

DROP TABLE messages;
ALTER TABLE messages_next RENAME TO messages;

CREATE UNIQUE INDEX messages_idempotency_key ON messages (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The claim picks each lane on its own: `status IN ('queued','leased') AND priority = ?
-- AND due_at <= ? ORDER BY due_at, id`. With the lane first in the key, each pick is
-- one range of this index, read in its order and stopped at the lane's limit, and
-- `next_due` reads the first entry of each lane. It replaces `messages_claim`, whose
-- order mixed the lanes.
CREATE INDEX messages_claim_by_lane ON messages (priority, due_at, id)
    WHERE status IN ('queued', 'leased');

CREATE INDEX messages_status_created ON messages (status, created_at, id);

CREATE INDEX messages_sent_updated ON messages (updated_at, id) WHERE status = 'sent';

-- Listing one client's messages of one status, oldest first. Messages of unnamed
-- clients are never listed by client, so they are not in it.
CREATE INDEX messages_client_status_created ON messages (client, status, created_at, id)
    WHERE client IS NOT NULL;
