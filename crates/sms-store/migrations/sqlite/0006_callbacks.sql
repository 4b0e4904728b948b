-- Status callbacks: the endpoint a client names for its message's events, and the
-- outbox those events wait in until the endpoint has taken them.
--
-- A message keeps the endpoint its request named, and each recorded send carries a
-- copy: a receipt settles a send, and the send must say where its event goes even
-- when the message itself has been purged meanwhile. A nullable column with no
-- default and no constraint is one SQLite adds in place (existing rows read it as
-- NULL), so neither table is rebuilt.
ALTER TABLE messages ADD COLUMN callback_url TEXT;
ALTER TABLE deliveries ADD COLUMN callback_url TEXT;

-- One row per event. The body is fixed when the event is stored, so every attempt
-- posts the same bytes under the same id. Events outlive their messages (a sent
-- message may be purged before its receipt's event is posted), so `message_id`
-- references nothing. Ids are UUID text, as message ids are. The CHECKs compare with
-- OR rather than `IN` lists: a list of more than two constants builds a temporary
-- B-tree at every write.
CREATE TABLE callbacks (
    id          TEXT    PRIMARY KEY NOT NULL,
    message_id  TEXT    NOT NULL,
    -- The status the event reports, for counting; the body carries it too.
    status      TEXT    NOT NULL
                CHECK (status = 'queued' OR status = 'sent' OR status = 'delivered'
                       OR status = 'undelivered' OR status = 'dead' OR status = 'expired'),
    url         TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending'
                CHECK (state = 'pending' OR state = 'delivered' OR state = 'failed'),
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When a pending event can next be claimed: its creation at first, the lease's
    -- end while a dispatcher holds it, the retry's time after a failed attempt. One
    -- column for all three keeps the claim a single range of one index.
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
    CHECK ((lease_owner IS NULL) = (lease_token IS NULL))
);

-- The claim's filter and order exactly: `state = 'pending' AND due_at <= ?now ORDER BY
-- due_at, id`. Settled rows are not in it, so it stays as small as the backlog.
CREATE INDEX callbacks_claim ON callbacks (due_at, id) WHERE state = 'pending';

-- Retention: settled events by age.
CREATE INDEX callbacks_settled ON callbacks (created_at) WHERE state <> 'pending';
