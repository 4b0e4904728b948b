//! The contract run against the in-memory fakes of sms-core, so the fakes other crates
//! test with behave like the real stores.

use std::sync::Arc;

use sms_core::testing::store_contract::ContractStore;
use sms_core::testing::{MemoryLedger, MemoryQueue};

async fn memory_store() -> Option<ContractStore> {
    Some(ContractStore::split(
        Arc::new(MemoryQueue::new()),
        Arc::new(MemoryLedger::new()),
    ))
}

// Not the atomic-batch cases: the fake stores a batch one message at a time.
sms_core::store_contract_tests!(memory_store);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_claimers_drain_10_000_messages_exactly_once() {
    crate::drain::drain_exactly_once(&[Arc::new(MemoryQueue::new())], 10_000).await;
}

mod delivery {
    use std::sync::Arc;

    use sms_core::testing::MemoryDeliveryLog;
    use sms_core::testing::delivery_contract::ContractLog;

    async fn memory_log() -> Option<ContractLog> {
        Some(ContractLog::new(Arc::new(MemoryDeliveryLog::new())))
    }

    sms_core::delivery_contract_tests!(memory_log);
}

mod callback {
    use std::sync::Arc;

    use sms_core::testing::MemoryOutbox;
    use sms_core::testing::callback_contract::ContractOutbox;

    async fn memory_outbox() -> Option<ContractOutbox> {
        Some(ContractOutbox::new(Arc::new(MemoryOutbox::new())))
    }

    sms_core::callback_contract_tests!(memory_outbox);
}
