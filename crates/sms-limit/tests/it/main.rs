//! Integration tests of `sms-limit`: the limiter contract of `sms_core::testing` run
//! against the in-process and the Redis limiters, then Redis-only behaviour (sharing,
//! outages, script reload).

mod in_process;
mod redis;
mod support;
