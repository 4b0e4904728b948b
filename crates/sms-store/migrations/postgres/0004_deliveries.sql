-- Delivery to the handset, per recipient: one row for each recipient a vendor accepted a
-- message for, found by the vendor's id for the send and the number, and the receipt
-- that settles it. A receipt that arrives before its send is recorded makes a row
-- without a message, which recording the send fills in.

CREATE TABLE deliveries (
    vendor            text        NOT NULL,
    vendor_message_id text        NOT NULL,
    recipient         text        NOT NULL,
    message_id        uuid,
    sent_at           timestamptz,
    state             text        NOT NULL DEFAULT 'sent'
                      CHECK (state IN ('sent', 'delivered', 'undelivered')),
    code              text,
    description       text,
    reported_at       timestamptz,
    receipt_at        timestamptz,
    segments          integer     CHECK (segments >= 0),
    PRIMARY KEY (vendor, vendor_message_id, recipient),
    -- A row is a recorded send, a receipt, or both.
    CHECK ((message_id IS NULL) = (sent_at IS NULL)),
    CHECK (message_id IS NOT NULL OR receipt_at IS NOT NULL),
    CHECK ((state = 'sent') = (receipt_at IS NULL))
);

-- A message's recipients, oldest send first.
CREATE INDEX deliveries_message ON deliveries (message_id, sent_at)
    WHERE message_id IS NOT NULL;

-- The sends to one number, newest first ("did my code arrive?").
CREATE INDEX deliveries_recipient ON deliveries (recipient, sent_at)
    WHERE message_id IS NOT NULL;

-- Retention: recorded sends by age, and receipts that never found their send.
CREATE INDEX deliveries_sent ON deliveries (sent_at) WHERE message_id IS NOT NULL;
CREATE INDEX deliveries_unmatched ON deliveries (receipt_at) WHERE message_id IS NULL;
