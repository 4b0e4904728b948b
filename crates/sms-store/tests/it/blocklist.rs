//! The blocklist's contract over both backends.

use std::sync::Arc;

use sms_core::testing::blocklist_contract::ContractBlocklist;
use sms_store::sqlite::SqliteStore;

use crate::support::pg_store;

async fn sqlite_blocklist() -> Option<ContractBlocklist> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("gateway.db"))
        .await
        .unwrap();
    Some(ContractBlocklist::new(Arc::new(store)).keeping(dir))
}

async fn postgres_blocklist() -> Option<ContractBlocklist> {
    let (store, guard) = pg_store().await?;
    Some(ContractBlocklist::new(Arc::new(store)).keeping(guard))
}

mod over_sqlite {
    use super::*;
    sms_core::blocklist_contract_tests!(sqlite_blocklist);
}

mod over_postgres {
    use super::*;
    sms_core::blocklist_contract_tests!(postgres_blocklist);
}
