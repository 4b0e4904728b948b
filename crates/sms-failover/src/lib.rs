//! The send path: rate limit, vendor health, cheapest-healthy failover, deferred-queue drain.
