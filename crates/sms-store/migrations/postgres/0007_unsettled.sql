-- The sends to one vendor still without a receipt, oldest first: what a vendor that
-- does not push its receipts is asked about, every few seconds. The index holds the
-- unsettled sends only, so the query reads its vendor's range in order and stops at
-- its limit however many settled rows the table holds; its key is the query's order,
-- so nothing is sorted.
--
-- The two ids are ordered byte by byte (COLLATE "C"), as SQLite and the in-memory log
-- order them, whatever the database's collation; the query orders by the same
-- collation, or the index could not give its order.
CREATE INDEX deliveries_unsettled
    ON deliveries (vendor, sent_at, vendor_message_id COLLATE "C", recipient COLLATE "C")
    WHERE state = 'sent' AND message_id IS NOT NULL;
