//! Small synchronisation helpers shared by every crate of the gateway.
//!
//! The gateway's locks guard plain data updated in place (counters, logs, buffers):
//! no critical section leaves its data half-written, so a panic on another thread
//! does not make it unusable and the lock helpers here ignore poisoning. Values that
//! several threads update side by side sit on cache lines of their own
//! ([`CachePadded`]), and per-thread sharding uses [`thread_index`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use crossbeam_utils::CachePadded;

/// Locks `mutex`, ignoring poisoning (see the module documentation).
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `lock` for reading, ignoring poisoning.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `lock` for writing, ignoring poisoning.
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// A small number of this thread's own, the same at every call on one thread: the
/// threads of a process are numbered 0, 1, 2, … in the order they first ask. Take it
/// modulo a shard count to give each thread its own shard of a sharded structure.
pub fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|index| *index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_still_locks() {
        let mutex = Mutex::new(1);
        let _ = std::panic::catch_unwind(|| {
            let _guard = mutex.lock().unwrap();
            panic!("poison it");
        });
        assert!(mutex.is_poisoned());
        *lock(&mutex) += 1;
        assert_eq!(*lock(&mutex), 2);
    }

    #[test]
    fn a_poisoned_rwlock_still_reads_and_writes() {
        let rwlock = RwLock::new(1);
        let _ = std::panic::catch_unwind(|| {
            let _guard = rwlock.write().unwrap();
            panic!("poison it");
        });
        assert!(rwlock.is_poisoned());
        *write(&rwlock) += 1;
        assert_eq!(*read(&rwlock), 2);
    }

    #[test]
    fn a_thread_keeps_its_index_and_other_threads_get_others() {
        let mine = thread_index();
        assert_eq!(thread_index(), mine);
        let theirs: Vec<usize> = (0..4)
            .map(|_| std::thread::spawn(thread_index).join().unwrap())
            .collect();
        let mut all = theirs.clone();
        all.push(mine);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 5, "{theirs:?} and {mine}");
    }
}
