//! Integration tests of `sms-limit`: the limiter and client limiter contracts of
//! `sms_core::testing` run against the in-process and the Redis limiters, then
//! Redis-only behaviour (sharing, outages, script reload, keys), and a Redis Cluster
//! refused at start; the board contract run against the Redis board, and its outages.

mod board;
mod cluster;
mod in_process;
mod redis;
mod redis_clients;
mod support;
