//! End-to-end tests: the real `sms-app` binary serving on a free port, driven over HTTP,
//! on the embedded defaults and on PostgreSQL + Redis.

mod api;
mod real_vendors;
mod server;
mod simulate;
