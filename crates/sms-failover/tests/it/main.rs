//! Behaviour of the gateway against in-memory fakes and mocks: one binary, several modules.

mod callbacks;
mod collaborators;
mod deliveries;
mod drain;
mod drain_rate;
mod failover;
mod lanes;
mod leases;
mod limiter_time;
mod limits;
mod outage;
mod pitfalls;
mod recipient_limits;
mod record;
mod resend;
mod send;
mod shared_health;
mod shared_usage;
mod split_sends;
mod support;
mod templates;
