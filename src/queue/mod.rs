//! Queues in shared memory.
//!
//! - [`SpscQueue`]: a bounded single-producer / single-consumer ring of
//!   `T: ShmType` between two processes (Lamport's ring with cached indices, as
//!   in rtrb), with batch and zero-copy loan operations.
//! - [`MpmcQueue`]: a bounded multi-producer / multi-consumer lock-free ring
//!   (Vyukov's per-slot sequence numbers) whose slots, when a process dies
//!   mid-operation, are repaired by the survivors; exact length, batch
//!   operations.
//! - [`ByteQueue`]: variable-length byte frames packed in one SPSC ring.
//! - [`Queue`], [`JoinableQueue`], [`SimpleQueue`]: Python's queues of any
//!   [`Handoff`](crate::Handoff) item: plain data in an [`MpmcQueue`]'s
//!   slots, anything else encoded into the frames of a frame ring (same
//!   protocol); `maxsize` 0 is an unbounded chain of rings.
//!
//! Waiting (see [`WaitStrategy`]): blocking calls spin briefly, then sleep
//! on a futex; an uncontended push or pop makes no syscall and executes no
//! CPU fence. The sleeping side announces itself with a flag and a
//! process-wide asymmetric barrier (`membarrier(2)`), so the other side
//! only needs a plain load of that flag to know whether to wake it.
//!
//! Every operation that waits has a `try_` twin that never waits and a
//! `_timeout` twin, and returns its own error enum (see the table in the
//! errors' module docs, e.g. [`TryPopError`]); all of them are also
//! re-exported at the crate root.
//!
//! Where things are (one idea per file):
//!
//! | file | what |
//! |---|---|
//! | `error.rs` | every queue error, one enum per operation |
//! | `ring.rs` | the SPSC index protocol (Lamport / rtrb), loom-checked |
//! | `spsc.rs` | the SPSC ring: control block, [`SpscQueue`], [`Producer`], [`Consumer`] |
//! | `roles.rs` | claiming the producer/consumer role of an SPSC-style ring, peer liveness |
//! | `wake.rs` | the SPSC-style wake protocol (flag + membarrier handshake) |
//! | `loan.rs` | zero-copy loans: [`WriteLoan`], [`ReadLoan`] |
//! | `bytes.rs` | variable-length frames on the SPSC ring: [`ByteQueue`] (large payloads 64-aligned) |
//! | `byte_loan.rs` | zero-copy frame loans: [`ByteWriteLoan`], [`ByteReadLoan`] |
//! | `vyukov.rs` | the MPMC protocol (Vyukov's bounded queue), loom-checked |
//! | `records.rs` | participant records: who holds which claim |
//! | `mpmc.rs` | the MPMC ring: control block, [`MpmcQueue`], push/pop and waiting |
//! | `repair.rs` | crash repair of a dead participant's claim |
//! | `joinable.rs` | `task_done` / `join` accounting |
//! | `item.rs` | what the MPMC slots carry: plain data or frames (chosen at compile time) |
//! | `frames.rs` | variable-length frames on the MPMC ring, encoded with `Handoff` |
//! | `itemring.rs` | one MPMC ring of any `Handoff` item |
//! | `chain.rs` | unbounded queues: a chain of rings, sealed, linked and retired |
//! | `inner.rs` | a queue handle's ring or chain, and its errors per operation |
//! | `facade.rs` | [`Queue`], [`JoinableQueue`], [`SimpleQueue`] |

real_platform! {
    mod byte_loan;
    mod bytes;
    mod chain;
    mod error;
    mod facade;
    mod inner;
    mod frames;
    mod item;
    mod itemring;
    mod joinable;
    mod loan;
    mod mpmc;
    mod records;
    mod repair;
    mod roles;
    mod spsc;
    mod wake;

    pub(crate) use chain::chain_held;
    pub(crate) use item::FRAMES_PREFIX;
    pub use byte_loan::{ByteReadLoan, ByteWriteLoan};
    pub use bytes::{ALIGN_FROM, ByteConsumer, ByteProducer, ByteQueue};
    pub(crate) use bytes::typed_payload;
    pub use facade::{JoinableQueue, Queue, SimpleQueue};
    pub use itemring::DEFAULT_MAX_FRAME;
    pub use chain::DEFAULT_MEMORY_LIMIT;
    pub use mpmc::MpmcQueue;
    #[doc(hidden)]
    pub use item::{FrameCell, PodVia, RingItem};
    pub use error::{
        CommitError, GetError, GetTimeoutError, PopError, PopTimeoutError, PushError, PushTimeoutError, PutError,
        PutTimeoutError, RecvError, RecvTimeoutError, RoleError, SendError, SendTimeoutError, TaskDoneError,
        TryGetError, TryPopError, TryPushError, TryPutError, TryRecvError, TrySendError,
    };
    pub use loan::{ReadLoan, WriteLoan};
    pub use spsc::{Consumer, Producer, SpscQueue};
}
// Also model-checked under loom (see `crate::loom_models`).
pub(crate) mod links;
pub(crate) mod ring;
pub(crate) mod vyukov;

pub use crate::wait::WaitStrategy;
