//! The spend ledger's contract over both backends.

use std::sync::Arc;

use sms_core::testing::spend_contract::ContractSpend;
use sms_store::sqlite::SqliteStore;

use crate::support::pg_store;

async fn sqlite_spend() -> Option<ContractSpend> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("gateway.db"))
        .await
        .unwrap();
    Some(ContractSpend::new(Arc::new(store)).keeping(dir))
}

async fn postgres_spend() -> Option<ContractSpend> {
    let (store, guard) = pg_store().await?;
    Some(ContractSpend::new(Arc::new(store)).keeping(guard))
}

mod over_sqlite {
    use super::*;
    sms_core::spend_contract_tests!(sqlite_spend);
}

mod over_postgres {
    use super::*;
    sms_core::spend_contract_tests!(postgres_spend);
}
