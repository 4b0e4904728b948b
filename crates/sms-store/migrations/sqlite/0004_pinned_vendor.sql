-- A message a vendor's per-number limit refused must go to that vendor again: another
-- vendor would get around the limit the recipient is under. `pinned_vendor` names it
-- until a failure without a pin, or an operator's retry, clears it; such a message is
-- queued with the reason 'recipient_refused', which the CHECK on `reason` now accepts
-- (still comparisons joined by OR: an `IN` list of more than two constants would build
-- a temporary B-tree at every write).
-- SQLite can add a column in place but not change a constraint, so the table is rebuilt
-- (inside the migration's transaction, as SQLite's documented procedure has it).

CREATE TABLE messages_next (
    id               TEXT    PRIMARY KEY NOT NULL,
    idempotency_key  TEXT,
    template         TEXT    NOT NULL,
    args             TEXT    NOT NULL,
    recipients       TEXT    NOT NULL,
    expires_at       INTEGER,
    status           TEXT    NOT NULL
                     CHECK (status = 'queued' OR status = 'leased' OR status = 'sent'
                            OR status = 'dead' OR status = 'expired'),
    reason           TEXT    NOT NULL
                     CHECK (reason = 'rate_limited' OR reason = 'vendor_throttled'
                            OR reason = 'vendor_failed' OR reason = 'timed_out'
                            OR reason = 'accepted' OR reason = 'manual_retry'
                            OR reason = 'recipient_refused'),
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
    )
);

INSERT INTO messages_next (id, idempotency_key, template, args, recipients, expires_at,
    status, reason, attempts, max_attempts, next_attempt_at, lease_owner, lease_token,
    lease_expires_at, last_vendor, last_error, may_duplicate, created_at, updated_at)
SELECT id, idempotency_key, template, args, recipients, expires_at,
    status, reason, attempts, max_attempts, next_attempt_at, lease_owner, lease_token,
    lease_expires_at, last_vendor, last_error, may_duplicate, created_at, updated_at
FROM messages;

DROP TABLE messages;
ALTER TABLE messages_next RENAME TO messages;

CREATE UNIQUE INDEX messages_idempotency_key ON messages (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The claim's filter and order exactly.
CREATE INDEX messages_claim ON messages (due_at, id) WHERE status IN ('queued', 'leased');

CREATE INDEX messages_status_created ON messages (status, created_at, id);

CREATE INDEX messages_sent_updated ON messages (updated_at, id) WHERE status = 'sent';
