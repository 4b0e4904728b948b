-- A message a vendor's per-number limit refused must go to that vendor again: another
-- vendor would get around the limit the recipient is under. `pinned_vendor` names it
-- until a failure without a pin, or an operator's retry, clears it.
--
-- Adding a nullable column without a default changes the catalogue only; no row is
-- rewritten.
ALTER TABLE messages ADD COLUMN pinned_vendor text;

-- Such a message is queued with the reason 'recipient_refused'. The CHECK on `reason`
-- (named by Postgres after the table and column) is replaced by one that accepts it;
-- every stored row met the narrower check, so the scan that validates the new one
-- finds nothing to refuse.
ALTER TABLE messages DROP CONSTRAINT messages_reason_check;

ALTER TABLE messages ADD CONSTRAINT messages_reason_check
    CHECK (reason IN ('rate_limited', 'vendor_throttled', 'vendor_failed', 'timed_out',
                      'accepted', 'manual_retry', 'recipient_refused'));
