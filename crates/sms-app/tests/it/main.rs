//! End-to-end tests: the real `sms-app` binary serving on a free port, driven over HTTP,
//! on the embedded defaults and on PostgreSQL + Redis.

mod api;
mod bad_input;
mod blocklist;
mod callbacks;
mod chaos;
mod clients;
mod deployment;
mod fuzz_smoke;
// The fuzz target bodies (fuzz/ is not a workspace member), run here on stable.
#[path = "../../../../fuzz/src/lib.rs"]
mod fuzz_targets;
mod lanes;
mod outcomes;
mod proxy;
mod real_vendors;
mod receipts;
mod scheduled;
mod security;
mod server;
mod simulate;
mod status_page;
mod traces;
mod vendor_rules;
