//! Spin policy: how long a blocked call keeps the core before it sleeps.
//!
//! Under loom every spin step yields to the model checker and the spin
//! counts are 1, so models explore the sleep paths instead of the spins.

use std::time::Duration;

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

/// How a blocked queue operation spins before it sleeps (see [`spin_step`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpinPolicy {
    /// Steps of pure spinning: a peer on another core answers within them.
    pub(crate) pure: u32,
    /// Steps before sleeping.
    pub(crate) limit: u32,
    /// After the pure steps, one step in this many yields the core.
    pub(crate) yield_every: u32,
}

/// The SPSC and byte rings: one peer, usually on another core.
pub(crate) const RING_SPIN: SpinPolicy = SpinPolicy { pure: 128, limit: 2_000, yield_every: 4 };

/// The MPMC ring: every step yields the core (the participant we wait for
/// may need it).
pub(crate) const MPMC_SPIN: SpinPolicy = SpinPolicy { pure: 0, limit: 64, yield_every: 1 };

/// How often a sleeping queue operation wakes up on its own to re-check
/// what no wake-up reports: a peer's death, a missed membarrier fallback.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// One step of a blocked queue operation before it sleeps. Returns false
/// when the caller should go to sleep now. Busy-polling never sleeps and
/// never yields; blocking spins `policy.pure` steps, then keeps spinning
/// but yields the core every `policy.yield_every` steps (the process we
/// wait for may need this core: more processes than cores is common), and
/// sleeps after `policy.limit` steps.
#[inline]
pub(crate) fn spin_step(wait: WaitStrategy, spins: &mut u32, policy: &SpinPolicy) -> bool {
    match wait {
        WaitStrategy::BusyPoll => {
            std::hint::spin_loop();
            true
        }
        WaitStrategy::Blocking if *spins < policy.limit => {
            *spins += 1;
            if *spins > policy.pure && (*spins).is_multiple_of(policy.yield_every) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
            true
        }
        WaitStrategy::Blocking => false,
    }
}

/// Spin iterations of a semaphore, event or barrier before it sleeps.
#[cfg(not(loom))]
pub(crate) const SPIN_LIMIT: u32 = 200;
#[cfg(loom)]
pub(crate) const SPIN_LIMIT: u32 = 1;

/// Spin steps of a locker before it sleeps. Each step waits twice as long
/// as the previous one (capped at 64 pause instructions), then re-reads the
/// lock word: a waiter that polls the word less often steals its cache
/// line from the holder less often, which is what two-process throughput
/// depends on.
#[cfg(not(loom))]
pub(crate) const LOCK_SPIN_STEPS: u32 = 10;
#[cfg(loom)]
pub(crate) const LOCK_SPIN_STEPS: u32 = 1;

/// One backoff step of a lock spin: `2^step` pause instructions, at most 64.
#[inline]
pub(crate) fn backoff(step: u32) {
    #[cfg(not(loom))]
    for _ in 0..1u32 << step.min(6) {
        std::hint::spin_loop();
    }
    #[cfg(loom)]
    {
        let _ = step;
        loom::thread::yield_now();
    }
}

/// One step of a spin-wait.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
