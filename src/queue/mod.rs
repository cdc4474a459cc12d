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

real_platform! {
    mod bytes;
    mod error;
    mod facade;
    mod joinable;
    mod loan;
    mod mpmc;
    mod records;
    mod repair;
    mod roles;
    mod spsc;
    mod wake;

    pub use bytes::{ByteConsumer, ByteProducer, ByteQueue};
    pub use facade::{JoinableQueue, Queue, SimpleQueue};
    pub use mpmc::MpmcQueue;
    pub use error::{
        CommitError, GetError, GetTimeoutError, PopError, PopTimeoutError, PushError, PushTimeoutError, PutError,
        PutTimeoutError, RecvError, RecvTimeoutError, RoleError, SendError, SendTimeoutError, TaskDoneError,
        TryGetError, TryPopError, TryPushError, TryPutError, TryRecvError, TrySendError,
    };
    pub use loan::{ReadLoan, WriteLoan};
    pub use spsc::{Consumer, Producer, SpscQueue};
}
// Also model-checked under loom (see `crate::loom_models`).
pub(crate) mod ring;
pub(crate) mod vyukov;

pub use crate::wait::WaitStrategy;
