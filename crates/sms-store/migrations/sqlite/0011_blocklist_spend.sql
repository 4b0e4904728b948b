-- The blocklist, and money spent per client for spend caps.

-- Numbers that get no messages: one row per blocked number (in the normalised
-- `+<digits>` form), with why and since when (INTEGER microseconds since the Unix
-- epoch). Blocking a blocked number keeps its row.
CREATE TABLE blocklist (
    number TEXT    PRIMARY KEY NOT NULL,
    reason TEXT    NOT NULL CHECK (reason = 'opted_out' OR reason = 'operator'),
    since  INTEGER NOT NULL
) WITHOUT ROWID;

-- Money spent per client and billing period, in whole millionths of the billing
-- currency. A client name is never empty, so '' stands for the unnamed client: a NULL
-- could not be part of the primary key, and the upsert that adds to a total needs the
-- key to find the row. SQLite turns an integer sum that overflows into a float rather
-- than failing; the type check refuses it, so a total is exact or the add fails.
CREATE TABLE client_spend (
    client TEXT    NOT NULL,
    period TEXT    NOT NULL,
    micros INTEGER NOT NULL CHECK (typeof(micros) = 'integer'),
    PRIMARY KEY (client, period)
) WITHOUT ROWID;
