//! The delivery-log contract over both backends.

use std::sync::Arc;

use sms_core::testing::delivery_contract::ContractLog;
use sms_store::sqlite::SqliteStore;

use crate::support::pg_store;

async fn sqlite_log() -> Option<ContractLog> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("gateway.db"))
        .await
        .unwrap();
    Some(ContractLog::new(Arc::new(store)).keeping(dir))
}

async fn postgres_log() -> Option<ContractLog> {
    let (store, guard) = pg_store().await?;
    Some(ContractLog::new(Arc::new(store)).keeping(guard))
}

mod over_sqlite {
    use super::*;
    sms_core::delivery_contract_tests!(sqlite_log);
}

mod over_postgres {
    use super::*;
    sms_core::delivery_contract_tests!(postgres_log);
}
