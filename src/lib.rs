//! # shmproc
//!
//! Python's `multiprocessing`, for Rust services that care about every
//! microsecond: separate processes on one Linux host share locks,
//! semaphores, events, conditions, barriers, values and arrays that live in
//! named shared-memory segments. Fixed-layout data, no serialization, no
//! broker, and no syscall on the uncontended path. A [`Pool`] of worker
//! processes runs registered functions ([`task!`]) over your data, as
//! Python's `Pool` does, and survives its workers' deaths.
//!
//! ## A tour
//!
//! Every object is created in one process and opened by name in others
//! (`/dev/shm/shmproc.<name>`). The creator owns the name and removes it
//! when its last handle drops.
//!
//! ```
//! use shmproc::{Barrier, Event, Lock, Semaphore, Value};
//!
//! // Process A creates...
//! let lock = Lock::new().unwrap();
//! let total = Value::new(0u64).unwrap();
//! let done = Event::new().unwrap();
//!
//! // ...and process B opens the same objects by name (here: same process,
//! // but the handles go through the same shared memory).
//! let lock_b = Lock::open(lock.name()).unwrap();
//! let total_b = Value::<u64>::open(total.name()).unwrap();
//! let done_b = Event::open(done.name()).unwrap();
//!
//! {
//!     let _held = lock_b.lock().unwrap();          // cross-process lock
//!     total_b.get_lock().unwrap().update(|v| *v += 42);
//! }
//! done_b.set();
//!
//! assert!(done.is_set());
//! assert_eq!(total.get().unwrap(), 42);
//!
//! // Semaphores and barriers work the same way.
//! let slots = Semaphore::new(2).unwrap();
//! assert!(slots.try_acquire() && slots.try_acquire() && !slots.try_acquire());
//! let barrier = Barrier::new(1).unwrap();
//! assert_eq!(barrier.wait(), Ok(0));
//!
//! // Bad input is a clear error, never a crash:
//! assert!(Value::<u32>::open(total.name()).is_err());  // wrong element type
//! assert!(Lock::open("no/slashes").is_err());           // invalid name
//! ```
//!
//! ## Your own data types
//!
//! `Value`, `Array`, `Mutex` and the rings of [`queue`] carry any
//! [`ShmType`]: plain old data (`Pod`: `#[repr(C)]`, no pointers, no
//! padding) with a name that every `open` checks (see [`ShmType`] for the
//! rule). The Python-shaped queues, pipes (`send_value`/`recv_value`),
//! process arguments and pool tasks carry any [`Handoff`] value, plain
//! data included (below). shmproc re-exports [`bytemuck`] and its [`Pod`] and
//! [`Zeroable`] derives, so a message type needs no other dependency than
//! shmproc; the `crate` attribute points the derive at the re-export:
//!
//! ```
//! #[derive(Clone, Copy, Debug, PartialEq, shmproc::Pod, shmproc::Zeroable)]
//! #[bytemuck(crate = "shmproc::bytemuck")]
//! #[repr(C)]
//! struct Tick {
//!     price: f64,
//!     qty: u32,
//!     side: u32,
//! }
//! shmproc::shm_type!(Tick = "md.Tick/v1"); // its name in every segment
//!
//! let last = shmproc::Value::new(Tick { price: 1.5, qty: 10, side: 1 }).unwrap();
//! last.set(Tick { price: 2.0, qty: 3, side: 0 }).unwrap();
//! assert_eq!(last.get().unwrap().qty, 3);
//! ```
//!
//! [`Queue`], [`JoinableQueue`] and [`SimpleQueue`] carry any [`Handoff`]
//! item, as Python's take any picklable object: plain data as above moves
//! through the queue's slots unencoded; strings, vectors, tuples, options
//! and your own `Handoff` types are encoded into frames. `Queue::new(0)`
//! is unbounded:
//!
//! ```
//! let q = shmproc::Queue::<(u32, String)>::new(0).unwrap();
//! q.put((1, "apple".to_owned())).unwrap();
//! q.put((2, "x".repeat(100_000))).unwrap(); // an unbounded queue grows its frames too
//! assert_eq!(q.get().unwrap(), (1, "apple".to_owned()));
//! assert_eq!(q.get().unwrap().1.len(), 100_000);
//! ```
//!
//! ## Crash safety
//!
//! A lock whose holder dies (even by `kill -9`) is handed to the next
//! locker with [`LockError::OwnerDied`]; it repairs the data and calls
//! `make_consistent()`. Notifiers never wait for waiters, so a dead waiter
//! blocks nobody. [`gc`] removes segments whose creator died (also one
//! stopped by Ctrl-C: shmproc installs no signal handler).
//!
//! ## Memory model across processes
//!
//! Every object lives in a shared mapping that other processes (correct,
//! buggy or hostile ones) can write at any moment. The crate holds to
//! these rules, and every `SAFETY` comment argues from them:
//!
//! 1. **Control words are atomics.** Headers, indices, lock words and
//!    sequence numbers are `Atomic*` fields, so a shared `&` to them is
//!    sound while peers write; every non-`Relaxed` ordering names the
//!    operation it pairs with (the happens-before edge it creates).
//! 2. **Data crosses through one primitive.** No `&`/`&mut` is ever formed
//!    to data another process may write (slots, frames, values, array
//!    elements, raw bytes). Data is copied in and out by volatile accesses
//!    of whole aligned words (one `mov` for a `u64`); a racing write yields
//!    garbage data of a `Pod` type, never undefined behaviour. The
//!    surrounding protocol (a ring's Acquire/Release index, a lock) is what
//!    makes a correct peer's data visible and complete. (One writer in that
//!    module uses plain stores: a pool `map` filling argument bytes that it
//!    never reads back and that no peer reads before they are published,
//!    so no peer's write can change what it computes.)
//! 3. **Shared memory is untrusted input.** Each header field is read once
//!    into a local, validated, and only the local is used; indices read
//!    from shared memory are masked or bounds-checked, and offsets given by
//!    callers are checked with checked arithmetic before any pointer is
//!    formed. A corrupted segment gives an error or garbage data.
//! 4. **Who may write.** `open` only uses regular files owned by our
//!    effective uid, or by an owner/group named in [`Options`] (then not
//!    writable by others unless the options allow it), checked on the
//!    opened file. Creation reserves every page, so a full `/dev/shm` is an
//!    [`OpenError::NoSpace`], not a SIGBUS.
//!
//! ## Limits
//!
//! Linux only (x86_64, aarch64). All processes must share one PID
//! namespace and see `/proc`. A peer with write access that truncates a
//! segment's file makes later accesses fault (SIGBUS), as with any shared
//! mapping; headers and indices read from shared memory are otherwise
//! validated before use.

#![deny(unsafe_op_in_unsafe_fn, missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(loom, allow(missing_docs, dead_code))]

#[cfg(not(target_os = "linux"))]
compile_error!("shmproc supports Linux only (futexes, /dev/shm, /proc)");
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("shmproc supports x86_64 and aarch64 only");
#[cfg(not(target_endian = "little"))]
compile_error!("shmproc needs a little-endian target (futex on the low half of a 64-bit word)");

/// Items that exist only on the real platform (shared memory, processes).
/// A loom build (`--cfg loom`) keeps only the algorithms it model-checks:
/// this is where the crate's item-level loom gate is written, once
/// (`wait::atomic` picks the atomics, `wait::futex` the futex).
macro_rules! real_platform {
    ($($item:item)*) => { $( #[cfg(not(loom))] $item )* };
}

pub mod queue;
mod sync;
mod sys;
mod wait;

real_platform! {
    mod error;
    mod handoff;
    mod manager;
    mod pipe;
    pub mod pool;
    pub mod process;
    mod shared;
    mod shm;

    pub use error::{LockError, NotOwnerError, OpenError};
    pub use handoff::{Handoff, HandoffError};
    #[doc(hidden)]
    pub use handoff::{PodWire as __PodWire, __decode_pod};
    pub use manager::{ContainerError, DictProxy, Element, Entry, ListProxy, ListRange, Manager, gc};
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub use manager::{__crash_after_steps, __crash_in_find_or_create};
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub use process::__PAUSE_IN_WATCH_PARENT;
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub use sys::futex::__timed_out_waits;
    pub use pipe::{
        Connection, ConnectionError, DEFAULT_CAPACITY as PIPE_CAPACITY, DEFAULT_MAX_FRAME as PIPE_MAX_FRAME,
        PipePollError, PipeRecvBytesError, PipeRecvBytesTimeoutError, PipeRecvError, PipeRecvTimeoutError,
        PipeRecvValueError, PipeRecvValueTimeoutError, PipeSendError, PipeSendTimeoutError, PipeTryRecvBytesError,
        PipeTryRecvError, PipeTryRecvValueError, PipeTrySendError, pipe, pipe_with,
    };
    pub use pool::{AsyncResult, GetTimeoutError as PoolGetTimeoutError, Pool, PoolBuilder, PoolError, TaskError};
    pub use process::{Process, ProcessError, ProcessInfo, active_children, cpu_count, current_process, parent_process};
    pub use queue::{
        CommitError, GetError, GetTimeoutError, JoinableQueue, PopError, PopTimeoutError, PushError, PushTimeoutError,
        PutError, PutTimeoutError, Queue, RecvError, RecvTimeoutError, RoleError, SendError, SendTimeoutError,
        SimpleQueue, TaskDoneError, TryGetError, TryPopError, TryPushError, TryPutError, TryRecvError, TrySendError,
    };
    pub use shared::{Array, Value};
    pub use shared::ArrayError;
    pub use shm::{Kind, MAX_NAME_LEN, NAME_PREFIX, Options, RawSegment, ShmType, unlink};
    pub use sync::barrier::{Barrier, BarrierError};
    pub use sync::condition::Condition;
    pub use sync::event::Event;
    pub use sync::lock::{DataGuard, Lock, LockGuard, Mutex, MutexGuard};
    pub use sync::rlock::{RLock, RLockGuard};
    pub use sync::semaphore::{BoundedSemaphore, ReleaseError, Semaphore};
    pub use wait::many::{MAX_OBJECTS as WAIT_MAX_OBJECTS, Ready as WaitReady, WaitError, Waitable, wait};
}

/// Re-exported so that user types can derive [`Pod`] and [`Zeroable`] with
/// shmproc as their only dependency (`#[bytemuck(crate = "shmproc::bytemuck")]`).
pub use bytemuck;
/// Plain old data: what shared memory carries (derive it with
/// `#[derive(shmproc::Pod, shmproc::Zeroable)]`, see the crate docs).
pub use bytemuck::{Pod, Zeroable};

/// The lock, reentrant lock, semaphore, event, condition and barrier algorithms on the heap,
/// for loom model checking (`RUSTFLAGS="--cfg loom"`). Not part of the API.
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_models {
    /// The SPSC ring's index protocol.
    pub mod ring {
        pub use crate::queue::ring::*;
    }
    /// The unbounded queue's link protocol (successor rings, holders).
    pub mod links {
        pub use crate::queue::links::*;
    }
    /// The MPMC ring's protocol (Vyukov's, with crash repair).
    pub mod vyukov {
        pub use crate::queue::vyukov::*;
    }
    pub use crate::sync::barrier::RawBarrier;
    pub use crate::sync::condition::RawCondition;
    pub use crate::sync::event::RawEvent;
    pub use crate::sync::raw_lock::{RawLock, Wait};
    pub use crate::sync::rlock::RawRLock;
    pub use crate::sync::semaphore::RawSemaphore;
}
