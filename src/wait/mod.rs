//! How every blocking call in the crate waits, in one place:
//!
//! - [`atomic`]: std or loom atomics (`--cfg loom` is decided here only);
//! - [`spin`]: how long a blocked call spins before it sleeps;
//! - [`futex`]: sleeping on and waking a word in shared memory;
//! - [`owner`]: lock owners' identity and liveness, checked while asleep;
//! - [`handshake`]: the queues' sleeper/waker handshake (membarrier);
//! - [`many`]: `wait` on many objects at once (`futex_waitv`), and the
//!   `Waitable` contract every object it takes fulfils;
//! - [`Deadline`]: when a `_timeout` call gives up. A timeout too large to
//!   represent means forever.
//!
//! The system calls themselves live in `crate::sys`.

pub(crate) mod atomic;
mod deadline;
pub(crate) mod futex;
#[cfg(not(loom))]
pub(crate) mod handshake;
#[cfg(not(loom))]
pub(crate) mod many;
pub(crate) mod owner;
pub(crate) mod spin;

pub(crate) use deadline::Deadline;
pub use spin::WaitStrategy;
