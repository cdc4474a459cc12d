//! Who holds a lock, and whether that thread is still alive: what a
//! sleeping locker checks every [`OWNER_POLL`] so a dead owner is noticed.
//! Under loom, identities are per loom thread and owners never die.

/// How often a sleeping locker re-checks whether the lock owner is alive.
#[cfg(not(loom))]
pub(crate) const OWNER_POLL: Option<std::time::Duration> = Some(super::spin::POLL);
#[cfg(loom)]
pub(crate) const OWNER_POLL: Option<std::time::Duration> = None;

#[cfg(not(loom))]
mod imp {
    use crate::sys::thread;

    /// The calling thread's packed identity (tid and start time).
    #[inline]
    pub(crate) fn me() -> u64 {
        thread::me()
    }

    /// Whether the thread with this packed identity is gone.
    pub(crate) fn owner_is_dead(packed: u64) -> bool {
        thread::owner_is_dead(packed)
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) fn me() -> u64 {
        use std::sync::atomic::AtomicU64 as StdU64;
        static NEXT: StdU64 = StdU64::new(1);
        loom::thread_local! {
            static ME: u64 = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0x3FFF_FFFF;
        }
        ME.with(|m| *m)
    }

    pub(crate) fn owner_is_dead(_packed: u64) -> bool {
        false
    }
}

pub(crate) use imp::*;
