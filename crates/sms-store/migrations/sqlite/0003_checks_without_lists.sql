-- No temporary B-tree per statement. SQLite checks `x IN (a, b, c, …)` with more than
-- two constants by building a temporary index of the list (a B-tree with its own pager
-- and page cache) each time the statement runs. The CHECK constraints on `status`
-- (five values) and `reason` (six) did that at every insert and every update of a
-- message. They are now comparisons joined by OR, which SQLite evaluates in place;
-- what the table accepts is unchanged. Lists of one or two constants (the claim
-- index's `status IN ('queued', 'leased')`, `may_duplicate IN (0, 1)`) are compared in
-- place already and stay as they are.
-- SQLite cannot change a table's constraints in place, so the table is rebuilt (inside
-- the migration's transaction, as SQLite's documented procedure has it).

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
                            OR reason = 'accepted' OR reason = 'manual_retry'),
    attempts         INTEGER NOT NULL CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 0),
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    last_vendor      TEXT,
    last_error       TEXT,
    may_duplicate    INTEGER NOT NULL DEFAULT 0 CHECK (may_duplicate IN (0, 1)),
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
