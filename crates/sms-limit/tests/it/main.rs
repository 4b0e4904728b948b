//! Integration tests of `sms-limit`: one contract suite run against the in-process and
//! the Redis limiters, then Redis-only behaviour (sharing, outages, script reload).

mod contract;
mod in_process;
mod redis;
mod support;
