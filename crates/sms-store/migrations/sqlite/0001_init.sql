-- The deferred queue and the usage ledger, embedded.
--
-- Times are INTEGER microseconds since the Unix epoch (the precision Postgres keeps, so
-- both backends return the same values); ids and lease tokens are hyphenated lower-case
-- UUID text, which sorts like the UUID's bytes; args and recipients are JSON arrays.

CREATE TABLE messages (
    id               TEXT    PRIMARY KEY NOT NULL,
    -- NULLs never collide in a UNIQUE constraint, so only keyed messages are unique.
    idempotency_key  TEXT    UNIQUE,
    template         TEXT    NOT NULL,
    args             TEXT    NOT NULL CHECK (json_valid(args) AND json_type(args) = 'array'),
    recipients       TEXT    NOT NULL CHECK (json_valid(recipients) AND json_type(recipients) = 'array'),
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

-- The claim's filter and order exactly.
CREATE INDEX messages_claim ON messages (due_at, id) WHERE status IN ('queued', 'leased');

CREATE INDEX messages_status_created ON messages (status, created_at, id);

CREATE INDEX messages_sent_updated ON messages (updated_at, id) WHERE status = 'sent';

CREATE TABLE usage (
    vendor TEXT    NOT NULL,
    period TEXT    NOT NULL,
    billed INTEGER NOT NULL CHECK (billed >= 0),
    PRIMARY KEY (vendor, period)
) WITHOUT ROWID;
