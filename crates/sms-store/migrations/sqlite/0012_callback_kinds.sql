-- Two more kinds of status event:
--
-- - 'cancelled': a client cancelled its message before it was sent;
-- - 'spend_warning': a spend passed its warning share of a monthly cap. It is about no
--   message, so its `message_id` is NULL, and only its.
--
-- SQLite cannot change a constraint in place, so the outbox is rebuilt: a new table,
-- the rows copied, the old table dropped, the new one renamed, and its two indexes made
-- again, inside the migration's transaction. No foreign key, trigger or view names the
-- table. The CHECKs still compare with OR rather than `IN` lists, which would build a
-- temporary B-tree at every write.

CREATE TABLE callbacks_next (
    id          TEXT    PRIMARY KEY NOT NULL,
    message_id  TEXT,
    -- The status the event reports, for counting; the body carries it too.
    status      TEXT    NOT NULL
                CHECK (status = 'queued' OR status = 'sent' OR status = 'delivered'
                       OR status = 'undelivered' OR status = 'dead' OR status = 'expired'
                       OR status = 'cancelled' OR status = 'spend_warning'),
    url         TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending'
                CHECK (state = 'pending' OR state = 'delivered' OR state = 'failed'),
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When a pending event can next be claimed: its creation at first, the lease's
    -- end while a dispatcher holds it, the retry's time after a failed attempt.
    due_at      INTEGER NOT NULL,
    lease_owner TEXT,
    lease_token TEXT,
    last_error  TEXT,
    settled_at  INTEGER,
    -- A settled event has its time of settling and no claim on it.
    CHECK (
        CASE WHEN state = 'pending'
            THEN settled_at IS NULL
            ELSE settled_at IS NOT NULL AND lease_token IS NULL
        END
    ),
    CHECK ((lease_owner IS NULL) = (lease_token IS NULL)),
    -- Only a spend warning is about no message.
    CHECK ((message_id IS NULL) = (status = 'spend_warning'))
);

INSERT INTO callbacks_next (id, message_id, status, url, body, created_at, state,
                            attempts, due_at, lease_owner, lease_token, last_error,
                            settled_at)
SELECT id, message_id, status, url, body, created_at, state, attempts, due_at,
       lease_owner, lease_token, last_error, settled_at
FROM callbacks;

DROP TABLE callbacks;
ALTER TABLE callbacks_next RENAME TO callbacks;

-- The claim's filter and order exactly: `state = 'pending' AND due_at <= ?now ORDER BY
-- due_at, id`. Settled rows are not in it, so it stays as small as the backlog.
CREATE INDEX callbacks_claim ON callbacks (due_at, id) WHERE state = 'pending';

-- Retention: settled events by age.
CREATE INDEX callbacks_settled ON callbacks (created_at) WHERE state <> 'pending';
