//! `TracedQueue` forwards every call unchanged: the contract over SQLite, wrapped as
//! `serve` wraps it (spans outside, shared commits inside). What the spans carry is
//! tested where they are exported, in sms-app.

use std::sync::Arc;
use std::time::Duration;

use sms_core::testing::store_contract::ContractStore;
use sms_store::sqlite::SqliteStore;
use sms_store::{GroupCommit, TracedQueue};

async fn sqlite_traced() -> Option<ContractStore> {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("gateway.db"))
            .await
            .unwrap(),
    );
    let shared = Arc::new(GroupCommit::new(store.clone(), 64, Duration::ZERO));
    let queue = Arc::new(TracedQueue::new(shared));
    Some(ContractStore::split(queue, store).keeping(dir))
}

sms_core::store_contract_tests!(sqlite_traced);
sms_core::store_contract_atomic_batch_tests!(sqlite_traced);
