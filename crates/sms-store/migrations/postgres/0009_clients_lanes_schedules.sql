-- Clients, lanes and schedules.
--
-- - `client`: the named client that sent the message; NULL for an unnamed one.
-- - `priority`: the message's lane, 'high' (login codes) or 'normal' (everything
--   else). A claim takes due high-priority messages before normal ones.
-- - `send_at`: the time the client scheduled the message for; NULL unless scheduled.
--   The message is queued with that time as its next attempt, so the claim needs no
--   other column to hold it back.
--
-- Adding nullable columns without a default changes the catalogue only; so does a
-- column with a constant default, which Postgres keeps in the catalogue for the rows
-- already stored instead of rewriting them. The CHECK on `priority` is validated by one
-- scan of the table, whose rows all read as 'normal'.
ALTER TABLE messages
    ADD COLUMN client text,
    ADD COLUMN priority text NOT NULL DEFAULT 'normal'
        CONSTRAINT messages_priority_check CHECK (priority IN ('high', 'normal')),
    ADD COLUMN send_at timestamptz;

-- A client may cancel a message still queued: it becomes 'cancelled', final, and its
-- `due_at` is NULL, as for every status but 'queued' and 'leased', so no claim sees it
-- again. A message scheduled by its client waits with the reason 'scheduled'. The
-- CHECKs on `status` and `reason` (named by Postgres after the table and column) are
-- replaced by ones that accept the new values; every stored row met the narrower ones.
ALTER TABLE messages DROP CONSTRAINT messages_status_check;

ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('queued', 'leased', 'sent', 'dead', 'expired', 'cancelled'));

ALTER TABLE messages DROP CONSTRAINT messages_reason_check;

ALTER TABLE messages ADD CONSTRAINT messages_reason_check
    CHECK (reason IN ('rate_limited', 'vendor_throttled', 'vendor_failed', 'timed_out',
                      'accepted', 'manual_retry', 'recipient_refused', 'scheduled'));

-- The claim picks each lane on its own: `status IN ('queued','leased') AND priority = X
-- AND due_at <= $now ORDER BY due_at, id`. With the lane first in the key, each pick is
-- one range of this index, read in its order and stopped at the lane's limit, and
-- `next_due` reads the first entry of each lane. Final rows are not in it, so it stays
-- as small as the backlog. It replaces `messages_claim`, whose order mixed the lanes.
DROP INDEX messages_claim;

CREATE INDEX messages_claim_by_lane ON messages (priority, due_at, id)
    WHERE status IN ('queued', 'leased');

-- Listing one client's messages of one status, oldest first. Messages of unnamed
-- clients are never listed by client, so they are not in it.
CREATE INDEX messages_client_status_created ON messages (client, status, created_at, id)
    WHERE client IS NOT NULL;
