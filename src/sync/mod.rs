//! Cross-process synchronisation primitives, all living in shared memory.

pub(crate) mod barrier;
pub(crate) mod condition;
pub(crate) mod event;
real_platform! {
    pub(crate) mod lock;
}
pub(crate) mod raw_lock;
pub(crate) mod rlock;
pub(crate) mod semaphore;
