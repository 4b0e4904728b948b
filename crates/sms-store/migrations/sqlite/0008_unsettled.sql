-- The sends to one vendor still without a receipt, oldest first: what a vendor that
-- does not push its receipts is asked about, every few seconds. The index holds the
-- unsettled sends only, so the query reads its vendor's range in order and stops at
-- its limit however many settled rows the table holds; its key is the query's order,
-- so nothing is sorted.
CREATE INDEX deliveries_unsettled
    ON deliveries (vendor, sent_at, vendor_message_id, recipient)
    WHERE state = 'sent' AND message_id IS NOT NULL;
