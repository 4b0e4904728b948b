-- Re-sends: a message the gateway creates to send an undelivered message again
-- through another vendor names the message it re-sends (`resend_of`, UUID text, as
-- message ids are) and the vendor it must avoid (`avoid_vendor`). Any other message
-- has neither. `resend_of` references nothing: the message it names may be purged
-- first.
--
-- Nullable columns with no default are ones SQLite adds in place, so the table is not
-- rebuilt. `ADD COLUMN` takes no table constraint, but SQLite lets a column's CHECK
-- name any column of its row, so the second column carries the check that the two are
-- set together; SQLite tests it against the existing rows, which have neither. The
-- codec refuses a row with one and not the other as well.
ALTER TABLE messages ADD COLUMN resend_of TEXT;
ALTER TABLE messages ADD COLUMN avoid_vendor TEXT
    CHECK ((resend_of IS NULL) = (avoid_vendor IS NULL));
