//! Python-shaped queues over [`MpmcQueue`]: `Queue`, `JoinableQueue`,
//! `SimpleQueue`, with `multiprocessing`'s method names.
//!
//! Items are any [`Handoff`] type, as Python's queues take any picklable
//! object: plain data (`u64`, arrays, `shm_type!` structs) moves as it is
//! in the slots of an [`MpmcQueue`] (zero-copy, no encoding); anything
//! else (`String`, `Vec`, tuples, `Option`s, your own `Handoff` types) is
//! encoded into a variable-length frame of a frame ring with the same
//! protocol and the same crash guarantees (`frames.rs`). Which one is
//! chosen at compile time from `T`.
//!
//! Differences from Python: a bounded queue's frames have a maximum size
//! (`max_frame`, 1024 bytes unless told; a larger item is `TooLarge`),
//! `qsize()` is exact, and every queue has the `put_nowait` / `get_nowait`
//! / `put_timeout` / `get_timeout` twins.
//!
//! Closing is Python's: `close()` closes this handle only (later puts and
//! gets through it fail with `Closed`; other handles, in this process or
//! others, keep working), and `close_all()` closes the queue for every
//! process (puts fail, gets drain what is left and then fail).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod waitable;

use super::chain::DEFAULT_MEMORY_LIMIT;
use super::error::{GetError, GetTimeoutError, PutError, PutTimeoutError, TaskDoneError, TryGetError, TryPutError};
use super::inner::Inner;
use super::itemring::{DEFAULT_MAX_FRAME, GetFail, ItemRing, Mode, PutFail};
use super::mpmc::MpmcQueue;
use crate::handoff::Handoff;
use crate::wait::Deadline;
use crate::{OpenError, Options, ShmType};

macro_rules! facade_common {
    ($t:ident, $doc_ty:literal) => {
        impl<T: Handoff> $t<T> {
            fn wrap(q: Inner<T>) -> Self {
                $t { q, closed: AtomicBool::new(false) }
            }

            /// Whether [`close`](Self::close) was called on this handle.
            #[inline(always)]
            fn handle_closed(&self) -> bool {
                // Relaxed: a flag of this handle only; it publishes no data.
                self.closed.load(Ordering::Relaxed)
            }

            /// A new queue holding at most `maxsize` items, under a unique
            /// name.
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::<u8>::new(3).unwrap();\nassert!(q.name().starts_with(\"anon.\"));\n```")]
            pub fn new(maxsize: u64) -> Result<Self, OpenError> {
                Inner::create(None, maxsize, DEFAULT_MAX_FRAME, DEFAULT_MEMORY_LIMIT, &Options::new()).map(Self::wrap)
            }

            /// A new unbounded queue (as `new(0)`) whose rings may take at
            /// most `memory_limit` bytes of shared memory; past it, the
            /// queue is full until consumers catch up (`put_nowait` fails
            /// with `Full`, `put` waits). The limit counts each ring's
            /// whole pages, header included; a limit too small for two
            /// rings is refused with an error that names the smallest one
            /// that works.
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::<u64>::unbounded_with_limit(1 << 20).unwrap();\nlet mut n = 0u64;\nwhile q.put_nowait(n).is_ok() {\n    n += 1; // until 1 MiB of rings is reached\n    assert!(n < 1_000_000);\n}\nassert!(n > 10_000);\nassert_eq!(q.get(), Ok(0));\n```")]
            pub fn unbounded_with_limit(memory_limit: u64) -> Result<Self, OpenError> {
                Inner::create(None, 0, DEFAULT_MAX_FRAME, memory_limit, &Options::new()).map(Self::wrap)
            }

            /// [`unbounded_with_limit`](Self::unbounded_with_limit) as `name`,
            /// with explicit [`Options`](crate::Options).
            #[doc = concat!("```\nlet name = format!(\"doc-qul-{}\", std::process::id());\nlet q = shmproc::", $doc_ty, "::<String>::create_unbounded(&name, 1 << 30, &shmproc::Options::new()).unwrap();\nq.put(\"x\".repeat(100_000)).unwrap(); // rings grow for large items too\nassert_eq!(q.get().unwrap().len(), 100_000);\n```")]
            pub fn create_unbounded(name: &str, memory_limit: u64, opts: &Options) -> Result<Self, OpenError> {
                Inner::create(Some(name), 0, DEFAULT_MAX_FRAME, memory_limit, opts).map(Self::wrap)
            }

            /// A new queue holding at most `maxsize` items whose encoding
            /// takes up to `max_frame` bytes (items that are not plain
            /// data; for plain data `max_frame` is not used). Each of the
            /// `maxsize` slots reserves `max_frame` bytes (plus 64, rounded
            /// up to 64-byte lines, and to an odd number of lines past two)
            /// in shared memory; a `max_frame` of 0 gives the slots of 1.
            #[doc = concat!("```
let q = shmproc::", $doc_ty, "::<Vec<u8>>::with_max_frame(2, 64 * 1024).unwrap();
q.put(vec![7; 60_000]).unwrap();
assert_eq!(q.get().unwrap().len(), 60_000);
assert!(q.max_frame() >= 64 * 1024);
```")]
            pub fn with_max_frame(maxsize: u64, max_frame: u64) -> Result<Self, OpenError> {
                Inner::create(None, maxsize, max_frame, DEFAULT_MEMORY_LIMIT, &Options::new()).map(Self::wrap)
            }

            /// [`create_with`](Self::create_with) with a frame size (see
            /// [`with_max_frame`](Self::with_max_frame)).
            #[doc = concat!("```
let name = format!(\"doc-qmf-{}\", std::process::id());
let q = shmproc::", $doc_ty, "::<String>::create_with_max_frame(&name, 2, 4096, &shmproc::Options::new()).unwrap();
q.put(\"x\".repeat(4000)).unwrap();
assert_eq!(q.get().unwrap().len(), 4000);
```")]
            pub fn create_with_max_frame(name: &str, maxsize: u64, max_frame: u64, opts: &Options) -> Result<Self, OpenError> {
                Inner::create(Some(name), maxsize, max_frame, DEFAULT_MEMORY_LIMIT, opts).map(Self::wrap)
            }

            /// The largest item encoding a put accepts (for plain data: the
            /// item's size).
            #[doc = concat!("```
let q = shmproc::", $doc_ty, "::<String>::new(2).unwrap();
let big = \"x\".repeat(q.max_frame() + 1);
let Err(shmproc::PutError::TooLarge { item, len, max }) = q.put(big.clone()) else { panic!() };
assert_eq!((item, max), (big, q.max_frame())); // the item back, and the limit
assert!(len > max); // its encoded length
```")]
            pub fn max_frame(&self) -> usize {
                self.q.max_frame()
            }

            /// Creates the queue as `name` (this process owns the name). An
            /// unbounded queue (`maxsize` 0) takes names of at most 187
            /// bytes, not [`MAX_NAME_LEN`](crate::MAX_NAME_LEN): its rings'
            /// names add 60 bytes to it.
            #[doc = concat!("```\nlet name = format!(\"doc-q-{}\", std::process::id());\nlet q = shmproc::", $doc_ty, "::<u8>::create(&name, 3).unwrap();\nassert_eq!(q.name(), name);\n```")]
            pub fn create(name: &str, maxsize: u64) -> Result<Self, OpenError> {
                Self::create_with(name, maxsize, &Options::new())
            }

            /// Opens the queue `name` (element type and layout are checked).
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::<u8>::new(3).unwrap();\nassert!(shmproc::", $doc_ty, "::<u8>::open(q.name()).is_ok());\n```")]
            pub fn open(name: &str) -> Result<Self, OpenError> {
                Self::open_with(name, &Options::new())
            }

            /// Opens `name`, or creates it with `maxsize` if it does not exist.
            #[doc = concat!("```\nlet name = format!(\"doc-qoc-{}\", std::process::id());\nlet a = shmproc::", $doc_ty, "::<u8>::open_or_create(&name, 3).unwrap();\nlet b = shmproc::", $doc_ty, "::<u8>::open_or_create(&name, 3).unwrap();\nassert_eq!(a.name(), b.name());\n```")]
            pub fn open_or_create(name: &str, maxsize: u64) -> Result<Self, OpenError> {
                Inner::open_or_create(name, maxsize, &Options::new()).map(Self::wrap)
            }

            /// [`create`](Self::create) with explicit [`Options`](crate::Options)
            /// (permissions, init timeout).
            #[doc = concat!("```\nlet name = format!(\"doc-qcw-{}\", std::process::id());\nlet opts = shmproc::Options::new().mode(0o640);\nlet q = shmproc::", $doc_ty, "::<u8>::create_with(&name, 3, &opts).unwrap();\nassert_eq!(q.name(), name);\n```")]
            pub fn create_with(name: &str, maxsize: u64, opts: &crate::Options) -> Result<Self, OpenError> {
                Inner::create(Some(name), maxsize, DEFAULT_MAX_FRAME, DEFAULT_MEMORY_LIMIT, opts).map(Self::wrap)
            }

            /// [`open`](Self::open) with explicit [`Options`](crate::Options).
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::<u8>::new(3).unwrap();\nlet opts = shmproc::Options::new().init_timeout(std::time::Duration::from_millis(100));\nassert!(shmproc::", $doc_ty, "::<u8>::open_with(q.name(), &opts).is_ok());\n```")]
            pub fn open_with(name: &str, opts: &crate::Options) -> Result<Self, OpenError> {
                Inner::open(name, opts).map(Self::wrap)
            }

            /// Keeps the name after the creator's last handle drops (and
            /// makes [`gc`](crate::gc) leave it); remove it with
            /// [`unlink`](crate::unlink). Any process may call it (one
            /// that opened the queue too).
            #[doc = concat!("```\nlet name = format!(\"doc-qp-{}\", std::process::id());\nlet q = shmproc::", $doc_ty, "::<u8>::create(&name, 3).unwrap();\nq.persist();\ndrop(q);\nassert!(shmproc::", $doc_ty, "::<u8>::open(&name).is_ok());\nshmproc::unlink(&name).unwrap();\n```")]
            pub fn persist(&self) {
                self.q.persist()
            }

            /// The name other processes open.
            #[doc = concat!("```\nassert!(!shmproc::", $doc_ty, "::<u8>::new(1).unwrap().name().is_empty());\n```")]
            pub fn name(&self) -> &str {
                self.q.name()
            }

            /// The underlying [`MpmcQueue`] of a plain-data queue (batch
            /// operations, wait strategy).
            ///
            /// # Panics
            /// If `T`'s [`Handoff`] is not the plain-data one (a type with a
            /// hand-written `ShmType` and `Handoff` but no
            /// [`handoff_pod!`](crate::handoff_pod)).
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::new(4).unwrap();\nassert_eq!(q.as_mpmc().push_slice(&[1u8, 2]), 2);\n```")]
            pub fn as_mpmc(&self) -> &MpmcQueue<T>
            where
                T: ShmType,
            {
                match &self.q {
                    Inner::Ring(ItemRing::Slots(q)) => q.as_plain(),
                    Inner::Ring(ItemRing::Frames(_)) => panic!("{} carries encoded frames, not plain data", std::any::type_name::<T>()),
                    Inner::Chain(_) => panic!("an unbounded queue is a chain of rings, not one MpmcQueue"),
                }
            }

            /// Puts an item, waiting for room; fails only if closed (this
            /// handle, or the queue for everyone).
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::new(1).unwrap();\nq.put(5u8).unwrap();\nassert_eq!(q.get(), Ok(5));\n```")]
            #[inline]
            pub fn put(&self, item: T) -> Result<(), PutError<T>> {
                if self.handle_closed() {
                    return Err(PutError::Closed(item));
                }
                self.q.put(item, Mode::Until(Deadline::NEVER)).map_err(PutFail::waited)
            }

            /// Gets an item, waiting for one; `Closed` once this handle is
            /// closed, or once the queue is closed for everyone and drained.
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::new(1).unwrap();\nq.put(6u8).unwrap();\nassert_eq!(q.get(), Ok(6));\n```")]
            #[inline]
            pub fn get(&self) -> Result<T, GetError> {
                if self.handle_closed() {
                    return Err(GetError::Closed);
                }
                self.q.get(Mode::Until(Deadline::NEVER)).map_err(GetFail::waited)
            }

            /// Puts without waiting: `Full` if there is no room.
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::new(1).unwrap();\nq.put_nowait(1u8).unwrap();\nassert_eq!(q.put_nowait(2), Err(shmproc::TryPutError::Full(2)));\n```")]
            #[inline]
            pub fn put_nowait(&self, item: T) -> Result<(), TryPutError<T>> {
                if self.handle_closed() {
                    return Err(TryPutError::Closed(item));
                }
                self.q.put(item, Mode::Try).map_err(PutFail::tried)
            }

            /// Puts, waiting at most `timeout` for room.
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::new(1).unwrap();\nq.put(1u8).unwrap();\nlet r = q.put_timeout(2, std::time::Duration::from_millis(2));\nassert_eq!(r, Err(shmproc::PutTimeoutError::TimedOut(2)));\n```")]
            pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutTimeoutError<T>> {
                if self.handle_closed() {
                    return Err(PutTimeoutError::Closed(item));
                }
                // A first attempt without a deadline: no clock read when
                // there is room (the clock is read only to wait).
                match self.q.put(item, Mode::Try) {
                    Err(PutFail::Full(item)) => self.q.put(item, Mode::Until(Deadline::after(timeout))),
                    r => r,
                }
                .map_err(PutFail::timed)
            }

            /// Gets without waiting: `Empty` if there is nothing.
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::<u8>::new(1).unwrap();\nassert_eq!(q.get_nowait(), Err(shmproc::TryGetError::Empty));\n```")]
            #[inline]
            pub fn get_nowait(&self) -> Result<T, TryGetError> {
                if self.handle_closed() {
                    return Err(TryGetError::Closed);
                }
                self.q.get(Mode::Try).map_err(GetFail::tried)
            }

            /// Gets, waiting at most `timeout`.
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::<u8>::new(1).unwrap();\nlet r = q.get_timeout(std::time::Duration::from_millis(2));\nassert_eq!(r, Err(shmproc::GetTimeoutError::TimedOut));\n```")]
            pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
                if self.handle_closed() {
                    return Err(GetTimeoutError::Closed);
                }
                // As in `put_timeout`: the clock is read only to wait.
                match self.q.get(Mode::Try) {
                    Err(GetFail::Empty) => self.q.get(Mode::Until(Deadline::after(timeout))),
                    r => r,
                }
                .map_err(GetFail::timed)
            }

            /// [`put`](Self::put) from a reference: the item is copied
            /// (plain data) or encoded (anything else) into the queue
            /// straight from `item`, so the caller keeps it and no clone is
            /// made. Waits for room; fails only if closed, or if the item
            /// is too large. The errors carry `()` where the owned forms
            /// hand the item back (the caller still has it), so they are
            /// `'static` and go through `?` into any error type.
            #[doc = concat!("```
let q = shmproc::", $doc_ty, "::<String>::new(4).unwrap();
let line = \"x\".repeat(64);
for _ in 0..3 {
    q.put_ref(&line).unwrap(); // no clone per put
}
assert_eq!(q.get().unwrap(), line);
let big = \"y\".repeat(q.max_frame());
let Err(shmproc::PutError::TooLarge { len, max, .. }) = q.put_ref(&big) else { panic!() };
assert_eq!((len, max), (big.len() + 8, q.max_frame())); // encoded length, limit
```")]
            #[inline]
            pub fn put_ref(&self, item: &T) -> Result<(), PutError<()>> {
                if self.handle_closed() {
                    return Err(PutError::Closed(()));
                }
                self.q.put_ref(item, Mode::Until(Deadline::NEVER)).map_err(PutFail::waited)
            }

            /// [`put_nowait`](Self::put_nowait) from a reference (as
            /// [`put_ref`](Self::put_ref)): `Full` if there is no room.
            #[doc = concat!("```
let q = shmproc::", $doc_ty, "::<String>::new(1).unwrap();
let s = \"pear\".to_string();
q.put_ref_nowait(&s).unwrap();
assert_eq!(q.put_ref_nowait(&s), Err(shmproc::TryPutError::Full(())));
```")]
            #[inline]
            pub fn put_ref_nowait(&self, item: &T) -> Result<(), TryPutError<()>> {
                if self.handle_closed() {
                    return Err(TryPutError::Closed(()));
                }
                self.q.put_ref(item, Mode::Try).map_err(PutFail::tried)
            }

            /// [`put_timeout`](Self::put_timeout) from a reference (as
            /// [`put_ref`](Self::put_ref)).
            #[doc = concat!("```
let q = shmproc::", $doc_ty, "::<String>::new(1).unwrap();
let s = \"fig\".to_string();
q.put_ref_timeout(&s, std::time::Duration::from_millis(2)).unwrap();
let r = q.put_ref_timeout(&s, std::time::Duration::from_millis(2));
assert_eq!(r, Err(shmproc::PutTimeoutError::TimedOut(())));
```")]
            pub fn put_ref_timeout(&self, item: &T, timeout: Duration) -> Result<(), PutTimeoutError<()>> {
                if self.handle_closed() {
                    return Err(PutTimeoutError::Closed(()));
                }
                // As in `put_timeout`: the clock is read only to wait.
                match self.q.put_ref(item, Mode::Try) {
                    Err(PutFail::Full(())) => self.q.put_ref(item, Mode::Until(Deadline::after(timeout))),
                    r => r,
                }
                .map_err(PutFail::timed)
            }

            /// [`get`](Self::get) into `out`, a value the caller reuses:
            /// plain data is assigned; anything else is decoded into it
            /// with [`Handoff::decode_into`](crate::Handoff::decode_into),
            /// so a `String` or `Vec` keeps its buffer and, once large
            /// enough, a get allocates nothing. Waits for an item.
            ///
            /// When it returns `Closed`, `out` is untouched. On `Corrupted`
            /// or `Decode` (the item is removed, as with `get`), `out` holds
            /// a valid but unspecified value (a `String`: empty).
            #[doc = concat!("```
let q = shmproc::", $doc_ty, "::<String>::new(4).unwrap();
q.put(\"apple\".to_string()).unwrap();
q.put(\"fig\".to_string()).unwrap();
let mut s = String::with_capacity(64);
let buf = s.as_ptr();
q.get_into(&mut s).unwrap();
assert_eq!(s, \"apple\");
q.get_into(&mut s).unwrap();
assert_eq!(s, \"fig\");
assert_eq!(s.as_ptr(), buf); // the same buffer both times
```")]
            #[inline]
            pub fn get_into(&self, out: &mut T) -> Result<(), GetError> {
                if self.handle_closed() {
                    return Err(GetError::Closed);
                }
                self.q.get_into(out, Mode::Until(Deadline::NEVER)).map_err(GetFail::waited)
            }

            /// [`get_nowait`](Self::get_nowait) into `out` (as
            /// [`get_into`](Self::get_into)); on `Empty`, `out` is untouched.
            #[doc = concat!("```
let q = shmproc::", $doc_ty, "::<Vec<u32>>::new(2).unwrap();
let mut v = vec![9; 8];
assert_eq!(q.get_into_nowait(&mut v), Err(shmproc::TryGetError::Empty));
assert_eq!(v, [9; 8]); // untouched
q.put(vec![1, 2]).unwrap();
q.get_into_nowait(&mut v).unwrap();
assert_eq!(v, [1, 2]);
```")]
            #[inline]
            pub fn get_into_nowait(&self, out: &mut T) -> Result<(), TryGetError> {
                if self.handle_closed() {
                    return Err(TryGetError::Closed);
                }
                self.q.get_into(out, Mode::Try).map_err(GetFail::tried)
            }

            /// [`get_timeout`](Self::get_timeout) into `out` (as
            /// [`get_into`](Self::get_into)); on `TimedOut`, `out` is
            /// untouched.
            #[doc = concat!("```
let q = shmproc::", $doc_ty, "::<(u32, String)>::new(2).unwrap();
let mut item = (0, String::new());
let r = q.get_into_timeout(&mut item, std::time::Duration::from_millis(2));
assert_eq!(r, Err(shmproc::GetTimeoutError::TimedOut));
q.put((7, \"plum\".to_string())).unwrap();
q.get_into_timeout(&mut item, std::time::Duration::from_millis(2)).unwrap();
assert_eq!(item, (7, \"plum\".to_string()));
```")]
            pub fn get_into_timeout(&self, out: &mut T, timeout: Duration) -> Result<(), GetTimeoutError> {
                if self.handle_closed() {
                    return Err(GetTimeoutError::Closed);
                }
                // As in `get_timeout`: the clock is read only to wait.
                match self.q.get_into(out, Mode::Try) {
                    Err(GetFail::Empty) => self.q.get_into(out, Mode::Until(Deadline::after(timeout))),
                    r => r,
                }
                .map_err(GetFail::timed)
            }

            /// Whether the queue is empty (exact at the moment of the call;
            /// a put killed before it finished leaves nothing behind, so
            /// `while !q.empty() { q.get()?; }` drains without blocking).
            #[doc = concat!("```\nassert!(shmproc::", $doc_ty, "::<u8>::new(1).unwrap().empty());\n```")]
            pub fn empty(&self) -> bool {
                self.q.is_empty()
            }

            /// Closes this handle, as Python's `close()`: later puts and gets
            /// through it fail with `Closed`. Other handles (clones, and the
            /// queue opened in other processes) are not affected; a clone of
            /// a closed handle starts open, as a queue handed to a child
            /// does in Python. Closing for every process is
            /// [`close_all`](Self::close_all).
            ///
            /// As in Python, `close` does not wake a `get` that another
            /// thread is already blocked in through this same handle: that
            /// call goes on waiting for an item (only calls that start
            /// after `close` fail). To wake blocked getters, use
            /// [`close_all`](Self::close_all), or put a sentinel item.
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::<u8>::new(2).unwrap();\nlet other = q.clone();\nq.put(1).unwrap();\nq.close();\nassert_eq!(q.put(2), Err(shmproc::PutError::Closed(2)));\nassert_eq!(q.get(), Err(shmproc::GetError::Closed));\nother.put(3).unwrap(); // other handles keep working\nassert_eq!(other.get(), Ok(1));\n```")]
            pub fn close(&self) {
                // Relaxed: see `handle_closed`.
                self.closed.store(true, Ordering::Relaxed);
            }

            /// An unbounded queue encoded into a child's argument: its
            /// holder step for a forked child (`Chain::fork_hold`).
            pub(crate) fn __note_fork_hold(&self) {
                if let Inner::Chain(c) = &self.q {
                    crate::process::handoff::note_fork_hold(|| c.fork_hold());
                }
            }

            /// Closes the queue for every process: puts through any handle
            /// fail with `Closed` (none lands after this returns), gets drain
            /// what is left and then fail with `Closed`; blocked callers
            /// everywhere wake. It cannot be undone.
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::<u8>::new(2).unwrap();\nlet other = q.clone();\nq.put(1).unwrap();\nq.close_all();\nassert_eq!(other.put(2), Err(shmproc::PutError::Closed(2)));\nassert_eq!(other.get(), Ok(1)); // drains\nassert_eq!(other.get(), Err(shmproc::GetError::Closed));\n```")]
            pub fn close_all(&self) {
                self.q.close()
            }

            /// Testing aid, not part of the API: see
            /// `MpmcQueue::__claim_and_stop` (claims the next position as a
            /// put, or a get with `pop`, and stops there, as if the thread
            /// died; an unbounded queue: in its newest ring, or its oldest
            /// with `pop`). Only with the `test-hooks` feature.
            #[cfg(feature = "test-hooks")]
            #[doc(hidden)]
            pub fn __claim_and_stop(&self, pop: bool) -> bool {
                match &self.q {
                    Inner::Ring(r) => super::itemring::each!(r, q => q.__claim_and_stop(pop)),
                    Inner::Chain(c) => c.claim_and_stop(pop),
                }
            }

            /// Testing aid, not part of the API: on an unbounded queue,
            /// seals the newest ring and stops, as a producer that died
            /// before linking its successor. Only with `test-hooks`.
            #[cfg(feature = "test-hooks")]
            #[doc(hidden)]
            pub fn __seal_newest(&self) {
                if let Inner::Chain(c) = &self.q {
                    c.seal_newest();
                }
            }

            /// Testing aid, not part of the API: on an unbounded queue,
            /// the name of its ring `k` (keyed, so tests cannot derive it
            /// from the names they list). Only with `test-hooks`.
            #[cfg(feature = "test-hooks")]
            #[doc(hidden)]
            pub fn __ring_name(&self, k: u64) -> Option<String> {
                if let Inner::Chain(c) = &self.q { Some(c.ring_name(k)) } else { None }
            }
        }

        /// A new handle to the same queue, open even if this one was
        /// [`close`](Self::close)d.
        impl<T> Clone for $t<T> {
            fn clone(&self) -> Self {
                $t { q: self.q.clone(), closed: AtomicBool::new(false) }
            }
        }

        impl<T> std::fmt::Debug for $t<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($t)).field(&self.q).finish()
            }
        }
    };
}

macro_rules! facade_full {
    ($t:ident, $doc_ty:literal) => {
        impl<T: Handoff> $t<T> {
            /// Whether the queue is full (exact at the moment of the call).
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::new(1).unwrap();\nq.put(1u8).unwrap();\nassert!(q.full());\n```")]
            pub fn full(&self) -> bool {
                self.q.is_full()
            }

            /// Exact number of items at one instant (Python's is
            /// approximate). A put under way counts (a get waits for it). A
            /// put killed before it finished is not counted once its slot
            /// reaches the front of the queue (it is discarded there, as a
            /// get would); behind items it still counts until then.
            #[doc = concat!("```\nlet q = shmproc::", $doc_ty, "::new(4).unwrap();\nq.put(1u8).unwrap();\nq.put(2).unwrap();\nassert_eq!(q.qsize(), 2);\n```")]
            pub fn qsize(&self) -> usize {
                self.q.len()
            }

            /// The capacity given at creation (Python's `maxsize`).
            #[doc = concat!("```\nassert_eq!(shmproc::", $doc_ty, "::<u8>::new(10).unwrap().maxsize(), 10);\n```")]
            pub fn maxsize(&self) -> usize {
                self.q.capacity()
            }
        }
    };
}

/// A process-shared FIFO queue, like `multiprocessing.Queue(maxsize)`.
///
/// ```
/// use shmproc::Queue;
/// let q = Queue::new(4).unwrap();
/// for colour in [1u32, 2, 3, 4] {
///     q.put(colour).unwrap();
/// }
/// assert!(q.full());
/// let mut got = Vec::new();
/// while !q.empty() {
///     got.push(q.get().unwrap());
/// }
/// assert_eq!(got, [1, 2, 3, 4]);
/// ```
///
/// # No feeder thread: `join_thread` and `cancel_join_thread`
///
/// Python's `Queue` hands each `put` to a background feeder thread, hence
/// its `join_thread()` (wait at exit until the buffered items are
/// written), `cancel_join_thread()` (exit without waiting, losing them)
/// and the rule that a process which put items must not be joined before
/// they are got. Here `put` copies the item into the shared segment
/// before it returns: there is no buffer to flush, so neither method
/// exists, a process may exit right after its last `put` without losing
/// it, and `get` sees an item as soon as its `put` returned. Only a full
/// bounded queue makes a producer wait (see the `task_queue` example).
///
/// ```
/// let q = shmproc::Queue::<String>::new(4).unwrap();
/// q.put("written".to_string()).unwrap();
/// q.close(); // nothing to flush: the item is in shared memory already
/// let other = shmproc::Queue::<String>::open(q.name()).unwrap();
/// assert_eq!(other.get_nowait().unwrap(), "written");
/// ```
///
/// # Memory: what a queue takes in `/dev/shm`
///
/// Measured on x86-64 Linux (segment sizes in `/dev/shm`); a ring's slot
/// count is the capacity rounded up to a power of two, and its space is
/// reserved when it is created:
///
/// | queue | slot | example |
/// |---|---|---|
/// | bounded, plain data (`Queue::<u64>::new(n)`) | the item + 8 B | `n` = 1 000: 25 KB; 10 000: 271 KB |
/// | bounded, encoded items (`Queue::<String>::new(n)`) | `max_frame` + 64 B, rounded up to an odd number of 64-byte lines past two: 1088 B by default | `n` = 1 000: 1.12 MB; 10 000 (16 384 slots): 17.8 MB; `with_max_frame(1 000, 64)`: 140 KB |
/// | unbounded (`Queue::new(0)`), plain data | 16 B per `u64` | 1 M queued `u64`: 16.8 MB |
/// | unbounded, encoded items | 128 B per item of up to 64 encoded bytes (larger items: rings with larger slots) | 1 M queued short strings (`"item-123456"`): 134 MB; 1 000: 216 KB (the first 64 KiB ring dominates) |
///
/// So a bounded queue of encoded items costs `slots x (max_frame + 64)`
/// whatever it holds: size `max_frame` to the items (`with_max_frame`). An
/// unbounded queue grows in rings of 64 KiB doubling up to 64 MiB, and
/// gives each ring back once it is drained; its memory limit
/// ([`unbounded_with_limit`](Self::unbounded_with_limit), 1 GiB by
/// default) bounds the total.
///
/// # No frame loans
///
/// A queue of encoded items has no zero-copy loans (write a frame in
/// place, or read it in place before releasing its slot), unlike
/// [`ByteQueue`](crate::queue::ByteQueue)'s, because its ring is one FIFO
/// of positions shared by every producer and every consumer (Vyukov's
/// protocol), and a loan would hold a claimed position across the caller's
/// code:
/// - a write loan holds position `p` claimed but unpublished: every
///   consumer that reaches `p` waits for it (`get` blocks, `get_nowait`
///   says `Empty`) even when other producers' later frames are ready, for
///   as long as the holder's code runs, or stays stopped (SIGSTOP: a
///   stopped holder is alive, so nobody may repair it). A byte-ring write
///   loan stalls only its own producer's later frames. (A holder killed
///   by SIGKILL would fit: its slot is skipped, as for a dead `put`.)
/// - a read loan holds position `p` claimed and unreleased: the producer
///   that comes round the ring to `p` waits for it even when every other
///   slot is free. And a holder killed by SIGKILL cannot behave like a
///   byte-ring read loan, whose frame stays for the next consumer: other
///   consumers have already moved past `p` (positions are claimed once, in
///   order), so the frame can only be lost with the holder, as for a
///   consumer killed inside `get`.
///
/// So the ring's "nobody blocks" guarantee holds only because no claimed
/// position is ever held across code that is not the queue's own copy.
/// For frames read or written in place, use a
/// [`ByteQueue`](crate::queue::ByteQueue) (one producer, one consumer).
///
/// ```
/// let q = shmproc::Queue::<String>::new(2).unwrap();
/// q.put("copied in, copied out".to_string()).unwrap();
/// assert_eq!(q.get().unwrap(), "copied in, copied out");
/// ```
pub struct Queue<T> {
    q: Inner<T>,
    closed: AtomicBool,
}
facade_common!(Queue, "Queue");
facade_full!(Queue, "Queue");

/// A [`Queue`] whose consumers confirm each item with
/// [`task_done`](Self::task_done), so a producer can [`join`](Self::join)
/// until all work is processed, like `multiprocessing.JoinableQueue`.
///
/// ```
/// use shmproc::JoinableQueue;
/// let q = JoinableQueue::new(4).unwrap();
/// q.put(1u8).unwrap();
/// assert!(!q.join_timeout(std::time::Duration::from_millis(1)));
/// q.get().unwrap();
/// q.task_done().unwrap();
/// q.join(); // returns at once: everything was marked done
/// assert!(q.task_done().is_err()); // more task_done than items
/// ```
pub struct JoinableQueue<T> {
    q: Inner<T>,
    closed: AtomicBool,
}
facade_common!(JoinableQueue, "JoinableQueue");
facade_full!(JoinableQueue, "JoinableQueue");

impl<T: Handoff> JoinableQueue<T> {
    /// Marks one item taken with `get` as processed; an error if called
    /// more times than items were put.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::new(2).unwrap();
    /// assert!(q.task_done().is_err());
    /// ```
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        self.q.task_done()
    }

    /// Blocks until every item ever put has been marked done.
    ///
    /// A producer killed inside `put` leaves nothing to wait for: its item
    /// either went in (and is counted until marked done) or is absent (its
    /// claimed slot is skipped and uncounted), bounded or unbounded. A
    /// consumer killed inside `get` or before the item's `task_done`
    /// leaves at most one task unfinished for good: its item, gone with it
    /// (as in Python), or, if it died in the few instructions between
    /// repairing a dead producer's slot and uncounting it, that slot. Call
    /// `task_done` for it, or use [`join_timeout`](Self::join_timeout).
    ///
    /// ```
    /// shmproc::JoinableQueue::<u8>::new(2).unwrap().join();
    /// ```
    pub fn join(&self) {
        self.q.join_until(Deadline::NEVER);
    }

    /// [`join`](Self::join), at most `timeout`; false if work remains.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::new(2).unwrap();
    /// q.put(1u8).unwrap();
    /// assert!(!q.join_timeout(std::time::Duration::from_millis(1)));
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.q.join_until(Deadline::after(timeout))
    }

    /// Items put and not yet marked done.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::new(2).unwrap();
    /// q.put(1u8).unwrap();
    /// assert_eq!(q.unfinished_tasks(), 1);
    /// ```
    pub fn unfinished_tasks(&self) -> u64 {
        self.q.unfinished()
    }
}

/// The minimal queue, like `multiprocessing.SimpleQueue`: `put`, `get`,
/// `empty`, `close` (with the `_nowait` / `_timeout` twins every queue
/// here has). `new(0)` is unbounded, as Python's `SimpleQueue()`; a
/// non-zero `maxsize` bounds it, which Python's cannot be.
///
/// ```
/// let q = shmproc::SimpleQueue::new(8).unwrap();
/// q.put(3i64).unwrap();
/// assert!(!q.empty());
/// assert_eq!(q.get(), Ok(3));
/// let unbounded = shmproc::SimpleQueue::<String>::new(0).unwrap();
/// for i in 0..10_000 {
///     unbounded.put(i.to_string()).unwrap(); // never full before its memory limit
/// }
/// assert_eq!(unbounded.get().unwrap(), "0");
/// ```
pub struct SimpleQueue<T> {
    q: Inner<T>,
    closed: AtomicBool,
}
facade_common!(SimpleQueue, "SimpleQueue");
