//! The columns that make a message a re-send, on Postgres: the database keeps them
//! whole, and the codec refuses what the database lets through but the domain does not.

use sms_core::{DeferredQueue, MessageId, Resend, VendorId};

use crate::support::{at, pg_store, queued};

/// A re-send's two columns are set together or not at all, and a vendor the CHECK lets
/// through but the domain refuses reads back as an error naming the column.
#[tokio::test]
async fn resend_columns_are_set_together_and_read_back() {
    let Some((store, _guard)) = pg_store().await else {
        return;
    };
    let m = queued(at(0), at(0));
    store.enqueue(m.clone()).await.unwrap();
    let client = store.pool().get().await.unwrap();
    let set = "UPDATE messages SET resend_of = $2, avoid_vendor = $3 WHERE id = $1";
    let of = MessageId::new();
    for (resend_of, avoid) in [(Some(of.as_uuid()), None), (None, Some("aliyun"))] {
        let e = client
            .execute(set, &[m.id.as_uuid(), &resend_of, &avoid])
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
            "{e}"
        );
    }
    client
        .execute(set, &[m.id.as_uuid(), of.as_uuid(), &"aliyun"])
        .await
        .unwrap();
    let resend = store
        .get(m.id)
        .await
        .unwrap()
        .unwrap()
        .request
        .resend()
        .cloned();
    assert_eq!(
        resend,
        Some(Resend {
            of,
            avoid: VendorId::new("aliyun").unwrap()
        })
    );
    client
        .execute(set, &[m.id.as_uuid(), of.as_uuid(), &"Aliyun"])
        .await
        .unwrap();
    let e = store.get(m.id).await.unwrap_err();
    assert!(e.to_string().contains("stored avoid_vendor"), "{e}");
}
