-- Two more kinds of status event:
--
-- - 'cancelled': a client cancelled its message before it was sent;
-- - 'spend_warning': a spend passed its warning share of a monthly cap. It is about no
--   message, so its `message_id` is NULL, and only its.
--
-- The CHECK on `status` (named by Postgres after the table and column) is replaced by
-- one that accepts the new values; every stored row met the narrower one. Dropping NOT
-- NULL changes the catalogue only. The new CHECK tying a NULL `message_id` to a spend
-- warning is validated by one scan of the outbox, whose rows all have a message.
ALTER TABLE callbacks DROP CONSTRAINT callbacks_status_check;

ALTER TABLE callbacks ADD CONSTRAINT callbacks_status_check
    CHECK (status IN ('queued', 'sent', 'delivered', 'undelivered', 'dead', 'expired',
                      'cancelled', 'spend_warning'));

ALTER TABLE callbacks ALTER COLUMN message_id DROP NOT NULL;

ALTER TABLE callbacks ADD CONSTRAINT callbacks_message_unless_spend
    CHECK ((message_id IS NULL) = (status = 'spend_warning'));
