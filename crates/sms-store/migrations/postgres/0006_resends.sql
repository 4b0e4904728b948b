-- Re-sends: a message the gateway creates to send an undelivered message again
-- through another vendor names the message it re-sends (`resend_of`) and the vendor it
-- must avoid (`avoid_vendor`). Any other message has neither. `resend_of` references
-- nothing: the message it names may be purged first.
--
-- Adding nullable columns without a default changes the catalogue only; no row is
-- rewritten. The CHECK that the two are set together is validated by one scan of the
-- table, whose rows have neither.
ALTER TABLE messages
    ADD COLUMN resend_of uuid,
    ADD COLUMN avoid_vendor text,
    ADD CONSTRAINT messages_resend_whole CHECK ((resend_of IS NULL) = (avoid_vendor IS NULL));
