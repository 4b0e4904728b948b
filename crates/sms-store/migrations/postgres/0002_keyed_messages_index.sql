-- The idempotency key's unique index holds keyed messages only. Before, every keyless
-- message had a NULL entry in it, and as no update of a message is HOT (each changes
-- its status, which indexes hold), every claim and every completion added another.
-- Lookups by key (`idempotency_key = $1`, `= ANY($1)`) still use the index, and the
-- inserts name its condition in ON CONFLICT.

ALTER TABLE messages DROP CONSTRAINT messages_idempotency_key_key;

CREATE UNIQUE INDEX messages_idempotency_key ON messages (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
