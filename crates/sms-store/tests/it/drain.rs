//! The drain under load: many claimers, one backlog, every message claimed and
//! completed exactly once, so concurrent drains never send a message twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sms_core::{DeferredQueue, MessageId, MessageStatus, NewMessage, QueueReason, VendorId};

use crate::support::{HANG, at, request};

/// Claimers that run at once.
pub const CLAIMERS: usize = 8;

/// Enqueues `messages` due messages through the first queue, then lets [`CLAIMERS`]
/// claimers, spread over `queues` (handles on one store: separate connections or
/// processes' worth), claim and complete until nothing is due. Checks that each message
/// was claimed once, completed once, and that the store agrees.
pub async fn drain_exactly_once(queues: &[Arc<dyn DeferredQueue>], messages: usize) {
    let loaders = 8;
    let mut tasks = Vec::new();
    for loader in 0..loaders {
        let queue = Arc::clone(&queues[0]);
        let count = messages / loaders + usize::from(loader < messages % loaders);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(count);
            for _ in 0..count {
                let m = NewMessage::queued(
                    MessageId::new(),
                    request(),
                    QueueReason::RateLimited,
                    5,
                    at(0),
                );
                ids.push(m.id);
                queue.enqueue(m).await.unwrap();
            }
            ids
        }));
    }
    let mut enqueued = Vec::with_capacity(messages);
    for task in tasks {
        enqueued.extend(task.await.unwrap());
    }

    let vendor = VendorId::new("aliyun").unwrap();
    let mut claimers = Vec::new();
    for c in 0..CLAIMERS {
        let queue = Arc::clone(&queues[c % queues.len()]);
        let vendor = vendor.clone();
        claimers.push(tokio::spawn(async move {
            let owner = format!("claimer-{c}");
            let mut completed = Vec::new();
            loop {
                // One "now" for the whole run and a long lease: no lease lapses, so a
                // second claim of any message would be a bug, not a rescue.
                let batch = queue
                    .claim(&owner, at(1), Duration::from_secs(3_600), 25)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return completed;
                }
                for m in batch {
                    let token = m.lease.as_ref().unwrap().token;
                    queue.complete(m.id, token, &vendor, at(2)).await.unwrap();
                    completed.push(m.id);
                }
            }
        }));
    }
    let mut per_id: HashMap<MessageId, usize> = HashMap::with_capacity(messages);
    let mut per_claimer = Vec::new();
    for claimer in claimers {
        let done = tokio::time::timeout(HANG * 5, claimer)
            .await
            .expect("claimers finish")
            .unwrap();
        per_claimer.push(done.len());
        for id in done {
            *per_id.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    assert_eq!(per_id.len(), messages, "every message claimed");
    for id in &enqueued {
        assert_eq!(per_id.get(id), Some(&1), "message {id}");
    }
    let stats = queues[0].stats().await.unwrap();
    assert_eq!(stats.sent, messages as u64);
    assert_eq!(stats.get(MessageStatus::Queued) + stats.leased, 0);
    eprintln!("messages per claimer: {per_claimer:?}");
}
