//! The sleeper/waker handshake of the queues, with no CPU fence on the
//! waker's fast path (see `crate::sys::membarrier` for the barrier).
//!
//! A sleeper announces itself (a SeqCst store to a "somebody sleeps" word),
//! calls [`after_announcing`], re-checks its condition, then sleeps. A
//! waker publishes with a plain store, calls [`fence_before_waiter_check`]
//! and reads the word: either the sleeper's re-check saw the publication,
//! or the waker sees the announcement and wakes it. Where a process cannot
//! register for asymmetric barriers, the ring's shared `fences` word makes
//! every waker fence for real ([`use_fences_unless_membarrier`]).

use std::sync::atomic::{AtomicU32, Ordering, compiler_fence, fence};

use crate::sys::membarrier;

/// At map time, for a ring whose wakers skip the CPU fence: if this process
/// cannot use asymmetric barriers (membarrier refused), sets the ring's
/// shared `fences` word so every participant's wakers fence for real.
pub(crate) fn use_fences_unless_membarrier(fences: &AtomicU32) {
    if !membarrier::register() {
        // SeqCst: publish the fallback to every participant; wakers read it (Relaxed) on each operation, and any
        // window before they see it is covered by the sleepers' 100 ms poll.
        fences.store(1, Ordering::SeqCst);
    }
}

/// Between a waker's publishing store and its load of a "somebody sleeps"
/// word: that load must not move before the store. With membarrier, the
/// sleeper's barrier orders the two on the CPU, so a compiler fence
/// suffices; without it (`fences` set), a real one.
#[inline(always)]
pub(crate) fn fence_before_waiter_check(fences: &AtomicU32) {
    if fences.load(Ordering::Relaxed) != 0 {
        // SeqCst: pairs with the sleeper's SeqCst registration and fence.
        fence(Ordering::SeqCst);
    } else {
        compiler_fence(Ordering::SeqCst);
    }
}

/// The sleeper's side, after its SeqCst announcement and before its
/// re-check: a full barrier on every CPU running a registered process
/// (pairs with the waker's [`fence_before_waiter_check`]).
#[inline]
pub(crate) fn after_announcing() {
    membarrier::heavy();
}
