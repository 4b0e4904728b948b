-- The deferred queue and the usage ledger.
--
-- Applied by `PgStore::migrate` inside one transaction, with `search_path` set to the
-- configured schema, so no name below is schema-qualified.

CREATE TABLE messages (
    id               uuid        PRIMARY KEY,
    -- NULLs never collide in a UNIQUE constraint, so only keyed messages are unique.
    idempotency_key  text        UNIQUE,
    template         text        NOT NULL,
    -- Real arrays: any argument text survives, no separator encoding.
    args             text[]      NOT NULL,
    recipients       text[]      NOT NULL CHECK (cardinality(recipients) > 0),
    expires_at       timestamptz,
    status           text        NOT NULL
                     CHECK (status IN ('queued', 'leased', 'sent', 'dead', 'expired')),
    reason           text        NOT NULL
                     CHECK (reason IN ('rate_limited', 'vendor_throttled', 'vendor_failed',
                                       'timed_out', 'accepted', 'manual_retry')),
    attempts         bigint      NOT NULL CHECK (attempts >= 0),
    max_attempts     bigint      NOT NULL CHECK (max_attempts >= 0),
    next_attempt_at  timestamptz NOT NULL,
    lease_owner      text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    last_vendor      text,
    last_error       text,
    may_duplicate    boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    -- When the message becomes claimable: derived by the database, so no statement can
    -- forget to keep it in step with status and the two times it stands for.
    due_at           timestamptz GENERATED ALWAYS AS (
                         CASE status
                             WHEN 'queued' THEN next_attempt_at
                             WHEN 'leased' THEN lease_expires_at
                         END
                     ) STORED,
    -- A leased message has all of its lease; any other has none of it.
    CONSTRAINT messages_lease_matches_status CHECK (
        CASE WHEN status = 'leased'
            THEN lease_owner IS NOT NULL AND lease_token IS NOT NULL AND lease_expires_at IS NOT NULL
            ELSE lease_owner IS NULL AND lease_token IS NULL AND lease_expires_at IS NULL
        END
    )
);

-- The claim's filter and order exactly: `status IN ('queued','leased') AND due_at <= $now
-- ORDER BY due_at, id`. Final rows are not in it, so it stays as small as the backlog.
CREATE INDEX messages_claim ON messages (due_at, id) WHERE status IN ('queued', 'leased');

-- Listing by status, oldest first.
CREATE INDEX messages_status_created ON messages (status, created_at, id);

-- Retention: sent messages by age.
CREATE INDEX messages_sent_updated ON messages (updated_at, id) WHERE status = 'sent';

-- Billed messages per vendor and billing period, shared by every instance.
CREATE TABLE usage (
    vendor text   NOT NULL,
    period text   NOT NULL,
    billed bigint NOT NULL CHECK (billed >= 0),
    PRIMARY KEY (vendor, period)
);
