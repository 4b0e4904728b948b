-- The blocklist, and money spent per client for spend caps.

-- Numbers that get no messages: one row per blocked number (in the normalised
-- `+<digits>` form), with why and since when. Blocking a blocked number keeps its row.
CREATE TABLE blocklist (
    number text        PRIMARY KEY,
    reason text        NOT NULL CHECK (reason IN ('opted_out', 'operator')),
    since  timestamptz NOT NULL
);

-- Money spent per client and billing period, in whole millionths of the billing
-- currency, shared by every instance. A client name is never empty, so '' stands for
-- the unnamed client: a NULL could not be part of the primary key, and the upsert that
-- adds to a total needs the key to find the row.
CREATE TABLE client_spend (
    client text   NOT NULL,
    period text   NOT NULL,
    micros bigint NOT NULL,
    PRIMARY KEY (client, period)
);
