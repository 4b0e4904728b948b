-- Status callbacks: the endpoint a client names for its message's events, and the
-- outbox those events wait in until the endpoint has taken them.
--
-- A message keeps the endpoint its request named, and each recorded send carries a
-- copy: a receipt settles a send, and the send must say where its event goes even
-- when the message itself has been purged meanwhile. Adding a nullable column without
-- a default changes the catalogue only; no row is rewritten.
ALTER TABLE messages ADD COLUMN callback_url text;
ALTER TABLE deliveries ADD COLUMN callback_url text;

-- One row per event. The body is fixed when the event is stored, so every attempt
-- posts the same bytes under the same id. Events outlive their messages (a sent
-- message may be purged before its receipt's event is posted), so `message_id`
-- references nothing.
CREATE TABLE callbacks (
    id          uuid        PRIMARY KEY,
    message_id  uuid        NOT NULL,
    -- The status the event reports, for counting; the body carries it too.
    status      text        NOT NULL
                CHECK (status IN ('queued', 'sent', 'delivered', 'undelivered', 'dead',
                                  'expired')),
    url         text        NOT NULL,
    body        text        NOT NULL,
    created_at  timestamptz NOT NULL,
    state       text        NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts    bigint      NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When a pending event can next be claimed: its creation at first, the lease's
    -- end while a dispatcher holds it, the retry's time after a failed attempt. One
    -- column for all three keeps the claim a single range of one index.
    due_at      timestamptz NOT NULL,
    lease_owner text,
    lease_token uuid,
    last_error  text,
    settled_at  timestamptz,
    -- A settled event has its time of settling and no claim on it.
    CONSTRAINT callbacks_settled_matches_state CHECK (
        CASE WHEN state = 'pending'
            THEN settled_at IS NULL
            ELSE settled_at IS NOT NULL AND lease_token IS NULL
        END
    ),
    CONSTRAINT callbacks_lease_whole CHECK ((lease_owner IS NULL) = (lease_token IS NULL))
);

-- The claim's filter and order exactly: `state = 'pending' AND due_at <= $now ORDER BY
-- due_at, id`. Settled rows are not in it, so it stays as small as the backlog.
CREATE INDEX callbacks_claim ON callbacks (due_at, id) WHERE state = 'pending';

-- Retention: settled events by age.
CREATE INDEX callbacks_settled ON callbacks (created_at) WHERE state <> 'pending';
