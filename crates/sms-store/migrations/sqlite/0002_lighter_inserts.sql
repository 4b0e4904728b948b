-- Cheaper inserts: storing a message touched five B-trees and parsed its two JSON
-- columns four times.
-- - The idempotency key's unique index holds keyed messages only (before, every keyless
--   message added a NULL entry to it). Lookups by key (`idempotency_key = ?`) still use
--   it, and the upsert names its condition.
-- - The JSON columns are no longer re-parsed by CHECK constraints: the store writes
--   them itself from typed values and reads them back through a JSON decoder, which
--   reports a malformed value as an error.
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
                     CHECK (status IN ('queued', 'leased', 'sent', 'dead', 'expired')),
    reason           TEXT    NOT NULL
                     CHECK (reason IN ('rate_limited', 'vendor_throttled', 'vendor_failed',
                                       'timed_out', 'accepted', 'manual_retry')),
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
