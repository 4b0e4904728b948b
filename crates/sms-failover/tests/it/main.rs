//! Behaviour of the gateway against in-memory fakes and mocks: one binary, several modules.

mod collaborators;
mod defects;
mod drain;
mod failover;
mod record;
mod send;
mod support;
