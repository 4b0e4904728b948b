//! Global and per-recipient rate limits: Redis, and in-process.
