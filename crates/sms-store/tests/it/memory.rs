//! The contract run against the in-memory fakes of sms-core, so the fakes other crates
//! test with behave like the real stores.

use std::sync::Arc;

use sms_core::testing::{MemoryLedger, MemoryQueue};

use crate::support::TestStore;

async fn memory_store() -> Option<TestStore> {
    Some(TestStore::split(
        Arc::new(MemoryQueue::new()),
        Arc::new(MemoryLedger::new()),
    ))
}

store_contract!(memory_store);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_claimers_drain_10_000_messages_exactly_once() {
    crate::drain::drain_exactly_once(&[Arc::new(MemoryQueue::new())], 10_000).await;
}
