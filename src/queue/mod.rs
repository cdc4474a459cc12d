//! Queues in shared memory.
//!
//! - [`SpscQueue`]: a bounded single-producer / single-consumer ring of
//!   `T: Pod` between two processes (Lamport's ring with cached indices, as
//!   in rtrb), with batch and zero-copy loan operations.
//! - [`MpmcQueue`]: a bounded multi-producer / multi-consumer lock-free ring
//!   (Vyukov's per-slot sequence numbers) whose slots, when a process dies
//!   mid-operation, are repaired by the survivors; exact length, batch
//!   operations.
//! - [`ByteQueue`]: variable-length byte frames packed in one SPSC ring.
//!
//! Waiting (see [`WaitStrategy`]): blocking calls spin briefly, then sleep
//! on a futex; an uncontended push or pop makes no syscall and executes no
//! CPU fence. The sleeping side announces itself with a flag and a
//! process-wide asymmetric barrier (`membarrier(2)`), so the other side
//! only needs a plain load of that flag to know whether to wake it.

#[cfg(not(loom))]
mod bytes;
#[cfg(not(loom))]
mod facade;
#[cfg(not(loom))]
mod mpmc;
#[cfg(not(loom))]
mod records;
#[cfg(loom)]
pub mod ring;
#[cfg(not(loom))]
pub(crate) mod ring;
#[cfg(not(loom))]
mod spsc;
#[cfg(loom)]
pub mod vyukov;
#[cfg(not(loom))]
pub(crate) mod vyukov;

#[cfg(not(loom))]
pub use bytes::{ByteConsumer, ByteProducer, ByteQueue};
#[cfg(not(loom))]
pub use facade::{JoinableQueue, Queue, SimpleQueue};
#[cfg(not(loom))]
pub use mpmc::{MpmcQueue, TaskDoneError};
#[cfg(not(loom))]
pub use spsc::{Consumer, PopError, Producer, PushError, ReadLoan, RoleError, SpscQueue, WriteLoan};

/// How a blocked queue operation waits.
///
/// ```
/// use shmproc::queue::WaitStrategy;
/// assert_eq!(WaitStrategy::default(), WaitStrategy::Blocking);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Spin briefly, then sleep on a futex: a blocked process uses no CPU.
    #[default]
    Blocking,
    /// Never sleep: poll the queue with a spin hint. Lowest latency, one
    /// busy core per waiter; meant for pinned, latency-critical threads.
    BusyPoll,
}

/// One step of a blocked queue operation before it sleeps. Returns false
/// when the caller should go to sleep now. Busy-polling never sleeps and
/// never yields; blocking spins `pure` steps (a peer on another core
/// answers within them), then keeps spinning but yields the core every
/// `yield_every` steps (the process we wait for may need this core: more
/// processes than cores is common), and sleeps after `limit` steps.
#[inline]
pub(crate) fn spin_step(wait: WaitStrategy, spins: &mut u32, pure: u32, limit: u32, yield_every: u32) -> bool {
    match wait {
        WaitStrategy::BusyPoll => {
            std::hint::spin_loop();
            true
        }
        WaitStrategy::Blocking if *spins < limit => {
            *spins += 1;
            if *spins > pure && (*spins).is_multiple_of(yield_every) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
            true
        }
        WaitStrategy::Blocking => false,
    }
}

/// At map time, for a ring whose wakers skip the CPU fence: if this process
/// cannot use asymmetric barriers (membarrier refused), sets the ring's
/// shared `fences` word so every participant's wakers fence for real.
#[cfg(not(loom))]
pub(crate) fn use_fences_unless_membarrier(fences: &std::sync::atomic::AtomicU32) {
    if !crate::sys::membarrier::register() {
        // SeqCst: publish the fallback to every participant; wakers read it (Relaxed) on each operation, and any
        // window before they see it is covered by the sleepers' 100 ms poll.
        fences.store(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Between a waker's publishing store and its load of a "somebody sleeps"
/// word: that load must not move before the store. With membarrier, the
/// sleeper's barrier orders the two on the CPU, so a compiler fence
/// suffices; without it (`fences` set), a real one.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn fence_before_waiter_check(fences: &std::sync::atomic::AtomicU32) {
    use std::sync::atomic::{Ordering, compiler_fence, fence};
    if fences.load(Ordering::Relaxed) != 0 {
        // SeqCst: pairs with the sleeper's SeqCst registration and fence.
        fence(Ordering::SeqCst);
    } else {
        compiler_fence(Ordering::SeqCst);
    }
}
