//! The worker process: takes task frames from its own ring, runs each item
//! (recording in its slot that it started it), writes the results into its
//! result ring, and tells the pool.
//!
//! An idle worker sleeps in `recv` (the ring's futex wake protocol); a busy
//! one makes no system call per item: the slot record is one atomic store,
//! results are copied into the ring, and the pool is woken only if it
//! sleeps (`Ctl::bump`).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ctl::{self, Ctl};
use super::frame::{self, END_OF_CHUNK, Items, ResultFrame};
use super::task::{self, Status};
use crate::RawSegment;
use crate::process::{Entry, Handoff, HandoffError};
use crate::queue::{ByteConsumer, ByteProducer, ByteQueue, ByteReadLoan};
use crate::sys::proc as sysproc;
use crate::wait::WaitStrategy;
use crate::wait::spin::{POLL, SpinPolicy, spin_step};
use crate::{RecvError, TryRecvError};

/// How a worker that finished its frames looks for the next one before it
/// sleeps: `apply` in a loop sends the next frame within a microsecond or
/// two (the pure steps cover that with no system call); a few yields
/// after them (the caller it answers may be waiting for this very core);
/// then it sleeps in its ring ([`ByteConsumer::poll`], no more spinning).
/// A worker that waits longer waits for the pool's process (a `map`'s
/// caller still writing arguments, its manager copying results out): on
/// 2 cores shared by 4 threads, every microsecond it spun was one of
/// theirs, and a spinning FIFO thread kept its core to itself (`chrt -f`:
/// the others queued on one core while this one spun on the other).
const NEXT_FRAME_SPIN: SpinPolicy = SpinPolicy { pure: 64, limit: 96, yield_every: 2 };

/// The next task frame, lent in place (see [`NEXT_FRAME_SPIN`]).
fn next_frame(rx: &mut ByteConsumer) -> Result<ByteReadLoan<'_>, RecvError> {
    let mut spins = 0;
    loop {
        match rx.try_recv_loan() {
            Err(TryRecvError::Empty) if spin_step(WaitStrategy::Blocking, &mut spins, &NEXT_FRAME_SPIN) => {}
            // Spun enough: sleep until a frame comes (or the ring is
            // closed, its producer gone, or the liveness period passes:
            // `recv_loan` below says which, or sleeps again).
            Err(TryRecvError::Empty) => {
                rx.poll(POLL);
                break;
            }
            // A frame (the dropped loan leaves it in place for `recv_loan`
            // below), or closed or disconnected: `recv_loan` says which.
            _ => break,
        }
    }
    rx.recv_loan()
}

/// What a worker is given.
pub(crate) struct WorkerArg {
    pub(crate) ctl: RawSegment,
    pub(crate) tasks: ByteQueue,
    pub(crate) results: ByteQueue,
    pub(crate) slot: u32,
    /// The initializer's task id and encoded argument.
    pub(crate) init: Option<(String, Vec<u8>)>,
    /// Exit after this many chunks (0: never).
    pub(crate) max_tasks: u64,
}

impl Handoff for WorkerArg {
    fn encode(&self, out: &mut Vec<u8>) {
        self.ctl.encode(out);
        self.tasks.encode(out);
        self.results.encode(out);
        (self.slot, self.init.clone(), self.max_tasks).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let ctl = RawSegment::decode(input)?;
        let tasks = ByteQueue::decode(input)?;
        let results = ByteQueue::decode(input)?;
        let (slot, init, max_tasks) = <(u32, Option<(String, Vec<u8>)>, u64)>::decode(input)?;
        Ok(WorkerArg { ctl, tasks, results, slot, init, max_tasks })
    }
}

/// The pool worker's entry (registered below, by hand: `Pool` refers to the
/// registration so that it is linked into every program that has a pool).
pub(crate) struct PoolWorker;

impl Entry for PoolWorker {
    const ID: &'static str = "shmproc::pool::worker";
    type Arg = WorkerArg;
    fn call(arg: WorkerArg) -> Result<(), String> {
        run(arg)
    }
}

extern "C" fn register_worker() {
    crate::process::__register::<PoolWorker>();
}

/// Registers the worker entry before `main` (as `entry!` does).
#[used]
#[unsafe(link_section = ".init_array.00500")]
pub(crate) static REGISTER_WORKER: extern "C" fn() = register_worker;

thread_local! {
    /// Set while this thread runs a frame's items: a task's panic is that
    /// item's failure, reported to the caller with its message (as Python
    /// raises a task's exception in the caller and prints nothing in the
    /// worker), so the panic hook stays silent.
    static RUNNING_ITEMS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The bytes of a plain-data value.
#[inline]
fn image<R>(v: &R) -> &[u8] {
    // SAFETY: only called for plain data (`run_pod`'s contract): its bytes
    // are initialised; the view lives as long as the borrow of `v`.
    unsafe { std::slice::from_raw_parts((v as *const R).cast::<u8>(), std::mem::size_of::<R>()) }
}

/// Makes the panic hook silent for task panics, once per process: other
/// panics still reach the hook that was there before. A worker started
/// with `StartMethod::Fork` must not take std's hook lock (a parent thread
/// panicking at the fork held it, for as long as its hook ran, and the
/// worker hung there forever): the pool installs it in the parent before
/// it forks a worker (a pass-through there: no parent thread runs items),
/// so the worker finds it done.
pub(crate) fn quiet_task_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !RUNNING_ITEMS.with(|r| r.get()) {
                previous(info);
            }
        }));
    });
}

/// Marks this thread as running items until dropped (a frame, not an item:
/// nothing per item on the hot path).
struct QuietPanics;

impl QuietPanics {
    fn enter() -> QuietPanics {
        RUNNING_ITEMS.with(|r| r.set(true));
        QuietPanics
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        RUNNING_ITEMS.with(|r| r.set(false));
    }
}

/// Runs `id` on an encoded argument, for the initializer.
fn run_init(id: &str, arg: &[u8]) -> Result<(), String> {
    let run = task::lookup(id.as_bytes()).ok_or_else(|| format!("initializer {id} is not registered in the worker"))?;
    let mut out = Vec::new();
    match run(arg, &mut out) {
        Status::Ok => Ok(()),
        _ => Err(format!("initializer {id} failed: {}", String::from_utf8_lossy(&out))),
    }
}

/// A worker's state while it runs the items of a task frame: the result
/// frame being written, where to send it, the item count it publishes.
pub(crate) struct Cx<'a> {
    ctl: &'a Ctl,
    started_word: &'a AtomicU64,
    tx: ByteProducer,
    out: ResultFrame,
    spill: Vec<u8>,
    /// Items this worker has begun (mirrors `started_word`).
    started: u64,
    /// The job of the frame being answered, and the index of the first
    /// item of the result frame being written.
    job: u64,
    next_first: u64,
    /// The item being run: where its result begins, and whether one is
    /// running (a panic outside an item is not an item's failure).
    mark: usize,
    in_item: bool,
    /// Arguments copied out of the task ring a block at a time
    /// (`run_pod_shared`).
    scratch: Vec<u8>,
}

/// A packed task frame's arguments where they lie, in the task ring:
/// shared memory, read only through the crate's copy primitive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SharedArgs {
    ptr: *const u8,
    len: usize,
}

impl SharedArgs {
    /// # Safety
    /// `ptr .. ptr + len` lies inside a live mapping, readable while the
    /// `SharedArgs` is used (a lent frame, not released meanwhile).
    pub(crate) unsafe fn new(ptr: *const u8, len: usize) -> SharedArgs {
        SharedArgs { ptr, len }
    }

    /// Whether argument images of `width` bytes can be read in place a
    /// word at a time ([`read_word_image`]): 8-aligned, whole words.
    fn by_words(&self, width: usize) -> bool {
        width.is_multiple_of(8) && (self.ptr as usize).is_multiple_of(8)
    }

    /// Copies bytes `at .. at + dst.len()` into `dst`.
    fn read(&self, at: usize, dst: &mut [u8]) {
        assert!(at.checked_add(dst.len()).is_some_and(|e| e <= self.len), "argument bytes out of range");
        // SAFETY: inside the range (checked), which is readable (`new`'s
        // contract); the copy primitive reads shared bytes.
        unsafe { crate::shm::copy::copy_from_shared(self.ptr.add(at), dst) }
    }
}

/// Reads the image of an `A` (plain data, a whole number of words) at
/// `src` in shared memory, a word at a time (one load for a `u64`).
///
/// # Safety
/// `src` is 8-aligned and `src .. src + size_of::<A>()` lies inside a live
/// mapping; `A` is plain data of `size_of::<A>()` bytes, a multiple of 8
/// (any bytes are an `A`).
#[inline(always)]
unsafe fn read_word_image<A>(src: *const u8) -> A {
    let mut v = std::mem::MaybeUninit::<A>::uninit();
    let dst = v.as_mut_ptr().cast::<u8>();
    for k in 0..std::mem::size_of::<A>() / 8 {
        // SAFETY: `k * 8 + 8 <= size_of::<A>()`: inside the 8-aligned source range (a volatile load,
        // as the copy primitive makes) and inside `v` (written unaligned).
        unsafe { dst.add(k * 8).cast::<u64>().write_unaligned(std::ptr::read_volatile(src.add(k * 8).cast::<u64>())) };
    }
    // SAFETY: every byte of `v` was written above; `A` is plain data.
    unsafe { v.assume_init() }
}

/// Writes the image of `v` (plain data, a whole number of words) at `dst`
/// in shared memory, a word at a time (one store for a `u64`).
///
/// # Safety
/// `dst` is 8-aligned and `dst .. dst + size_of::<R>()` lies inside a live,
/// writable mapping that the caller's protocol lets it write; `R` is plain
/// data of `size_of::<R>()` bytes, a multiple of 8.
#[inline(always)]
unsafe fn write_word_image<R>(dst: *mut u8, v: R) {
    let v = std::mem::ManuallyDrop::new(v);
    let src = (&raw const v).cast::<u8>();
    for k in 0..std::mem::size_of::<R>() / 8 {
        // SAFETY: `k * 8 + 8 <= size_of::<R>()`: inside `v` (plain data, read unaligned) and the
        // 8-aligned destination range (a volatile store, as the copy primitive makes).
        unsafe { std::ptr::write_volatile(dst.add(k * 8).cast::<u64>(), src.add(k * 8).cast::<u64>().read_unaligned()) };
    }
}

/// The arguments an arena frame (lent, its header and id `head_len` bytes)
/// refers to: its reference read and checked, the arena mapped (kept in
/// `arenas`, the last two). An error (a malformed reference, an arena that
/// cannot be opened) ends the worker: the pool runs its items elsewhere.
/// `r` is the worker's buffer for the reference (kept: no allocation per
/// frame once it has grown to a reference's size).
fn arena_args(
    loan: &crate::queue::ByteReadLoan<'_>,
    head_len: usize,
    arenas: &mut Vec<RawSegment>,
    r: &mut Vec<u8>,
) -> Result<SharedArgs, String> {
    r.clear();
    r.resize(loan.len().saturating_sub(head_len), 0);
    loan.read_at(head_len, r);
    let (offset, bytes, name) = frame::arena_ref(r).ok_or("corrupt task frame: bad arena reference")?;
    let at = match arenas.iter().position(|a| a.name() == name) {
        Some(i) => i,
        None => {
            let seg = RawSegment::open(name).map_err(|e| format!("the pool's arena {name}: {e}"))?;
            if arenas.len() >= 2 {
                arenas.remove(0);
            }
            arenas.push(seg);
            arenas.len() - 1
        }
    };
    let seg = &arenas[at];
    if offset.checked_add(bytes).is_none_or(|e| e > seg.len()) {
        return Err(format!("corrupt task frame: arena slice {offset}+{bytes} past its {} bytes", seg.len()));
    }
    // SAFETY: `offset + bytes <= seg.len()` (checked): inside the arena's mapping, which `arenas` keeps
    // while the frame runs (it changes only here, before the next frame).
    Ok(unsafe { SharedArgs::new(seg.as_ptr().add(offset).cast_const(), bytes) })
}

/// Arguments copied out of the ring per block in `run_pod_shared`.
const SCRATCH: usize = 16 * 1024;

impl Cx<'_> {
    /// Runs `count` items of `items` with `run`, in order, writing each
    /// result into the result frame (sent whenever it is full). One
    /// `catch_unwind` per frame, not per item: after a panic the item that
    /// panicked fails with its message and the loop resumes at the next.
    #[inline]
    pub(crate) fn run_items(
        &mut self,
        mut items: Items<'_>,
        count: u32,
        mut run: impl FnMut(&[u8], &mut Vec<u8>) -> Status,
    ) -> Result<(), String> {
        let mut done = 0u32;
        let _quiet = QuietPanics::enter();
        loop {
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
                if let Some((args, width)) = items.packed() {
                    // Arguments of one width, back to back: resume after
                    // the `done` ones (after a panic too).
                    for arg in args.chunks_exact(width).skip(done as usize) {
                        self.begin();
                        let status = run(arg, &mut self.out.bytes);
                        self.end(status)?;
                        done += 1;
                    }
                    return if done == count { Ok(()) } else { Err("corrupt task frame".into()) };
                }
                while done < count {
                    let item = items.next().ok_or("corrupt task frame")?;
                    self.begin();
                    let status = run(item, &mut self.out.bytes);
                    self.end(status)?;
                    done += 1;
                }
                Ok(())
            }));
            match r {
                Ok(r) => return r,
                Err(payload) => {
                    self.panicked(payload)?;
                    done += 1;
                }
            }
        }
    }

    /// A panic came out of a frame's loop: the item that ran fails with
    /// its message (a panic outside an item goes on unwinding).
    #[cold]
    #[inline(never)]
    fn panicked(&mut self, payload: Box<dyn std::any::Any + Send>) -> Result<(), String> {
        if !self.in_item {
            std::panic::resume_unwind(payload);
        }
        self.out.reset_item(self.mark);
        self.out.bytes.extend_from_slice(task::panic_message(&*payload).as_bytes());
        crate::process::drop_payload(payload);
        self.end(Status::Panicked)
    }

    /// Runs plain-data items (the bulk path, see `frame::pod_width`):
    /// each argument is read as its image and each value written as its
    /// image straight into the result frame's spare room, in runs as long
    /// as the packed frame has room (no decoding, no encoding, no length
    /// test per item; `started` is still stored before each item, for
    /// `WorkerLost`). The caller checked that `A` and `R` are plain data.
    /// The first item of a result frame, a failure, a panic and a full
    /// frame take the general path (`begin` / `end`).
    #[inline]
    pub(crate) fn run_pod<A, R>(
        &mut self,
        items: Items<'_>,
        count: u32,
        f: impl Fn(A) -> Result<R, String>,
    ) -> Result<(), String> {
        let width = std::mem::size_of::<A>();
        let Some((args, _)) = items.packed().filter(|&(_, w)| w == width) else {
            return Err("corrupt task frame".into());
        };
        let (wr, count) = (std::mem::size_of::<R>(), count as usize);
        // Argument `k` (bounds-checked: a frame holds `count` of them).
        let arg = |k: usize| {
            let bytes = &args[k * width..(k + 1) * width];
            // SAFETY: `size_of::<A>()` bytes of a private buffer (the frame, copied out of the ring);
            // `A` is plain data (the caller's check): any bytes are an `A`.
            unsafe { bytes.as_ptr().cast::<A>().read_unaligned() }
        };
        let mut done = 0usize;
        // Values of the run in progress written past the frame's length
        // (kept outside the unwind boundary: a panic commits them).
        let mut run = 0usize;
        let mut in_run = false;
        let _quiet = QuietPanics::enter();
        loop {
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
                while done < count {
                    let fast = self.out.pod_room(wr).min(count - done);
                    if fast == 0 {
                        // One item the general way (it may start a frame).
                        let a = arg(done);
                        self.begin();
                        match f(a) {
                            Ok(v) => {
                                self.out.bytes.extend_from_slice(image(&v));
                                self.end(Status::Ok)?;
                            }
                            Err(msg) => self.failed(&msg)?,
                        }
                        done += 1;
                        continue;
                    }
                    self.out.bytes.reserve(fast * wr);
                    let dst = self.out.bytes.spare_capacity_mut().as_mut_ptr().cast::<u8>();
                    let started = self.started;
                    in_run = true;
                    while run < fast {
                        let a = arg(done + run);
                        // Relaxed, as in `begin` (same pairing).
                        self.started_word.store(started + run as u64 + 1, Ordering::Relaxed);
                        match f(a) {
                            // SAFETY: `run < fast`, `fast * wr` bytes of spare room reserved above;
                            // `R` is plain data, written as its bytes.
                            Ok(v) => unsafe { dst.add(run * wr).cast::<R>().write_unaligned(v) },
                            Err(msg) => {
                                self.end_run(&mut run, &mut done, wr);
                                in_run = false;
                                self.begun();
                                self.failed(&msg)?;
                                done += 1;
                                break;
                            }
                        }
                        run += 1;
                    }
                    if in_run {
                        self.end_run(&mut run, &mut done, wr);
                        in_run = false;
                    }
                }
                Ok(())
            }));
            match r {
                Ok(r) => return r,
                Err(payload) => {
                    if in_run {
                        // The values before the panicking item stand; it
                        // had begun (its `started` was stored).
                        self.end_run(&mut run, &mut done, wr);
                        in_run = false;
                        self.begun();
                    }
                    self.panicked(payload)?;
                    done += 1;
                }
            }
        }
    }

    /// Runs a packed frame of plain-data items whose arguments are still in
    /// the task ring, writing the values straight into a frame lent by the
    /// result ring: each argument is copied out once (a block at a time,
    /// into an L1-sized buffer) and each value written once, with no frame
    /// buffer on either side. `started` is stored before each item, as in
    /// [`run_pod`](Self::run_pod). At the first item that fails or panics,
    /// the values before it move into the result frame being built (the
    /// lent one is dropped unpublished) and the rest of the frame takes the
    /// general way. `Ok(false)`, nothing run, when the frame is not for
    /// this path (another width, values that do not fit in one result frame).
    pub(crate) fn run_pod_shared<A, R>(
        &mut self,
        args: SharedArgs,
        count: u32,
        f: impl Fn(A) -> Result<R, String>,
    ) -> Result<bool, String> {
        let (width, wr, n) = (std::mem::size_of::<A>(), std::mem::size_of::<R>(), count as usize);
        let values = frame::RESULT_HEADER_LEN + n * wr;
        if width == 0 || wr == 0 || n == 0 || n.checked_mul(width) != Some(args.len) || values > frame::MAX_FRAME || self.out.count() > 0 {
            return Ok(false);
        }
        let block = (SCRATCH / width.max(wr)).max(1);
        let s0 = self.started;
        let mut loan = self.tx.send_loan(values).map_err(|e| format!("result queue: {e}"))?;
        let dst = loan.as_mut_ptr();
        // Whole words, aligned (every `u64` map from the arena): read and
        // written in place, a word at a time, no scratch buffer.
        // (The values start a whole number of words after `dst`.)
        const { assert!(frame::RESULT_HEADER_LEN.is_multiple_of(8)) };
        let direct = args.by_words(width) && wr.is_multiple_of(8) && (dst as usize).is_multiple_of(8);
        if !direct {
            self.scratch.resize(block * width, 0);
        }
        // Items whose values are in the lent frame.
        let mut done = 0usize;
        let (scratch, started_word) = (&mut self.scratch, self.started_word);
        let quiet = QuietPanics::enter();
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| -> Option<String> {
            if direct {
                // The index in a local (a register): `done` is only
                // written, before each item (it must name the item that
                // panics), never read back here. (Read back, it cost a
                // store-to-load round trip per item: the volatile stores
                // below may alias it for all the compiler knows.)
                // (So are the bounds and the base: copies in locals.)
                let (src, n, out) = (args.ptr, n, dst.wrapping_add(frame::RESULT_HEADER_LEN));
                let mut i = 0usize;
                while i < n {
                    // Readable (`SharedArgs::new`), 8-aligned with whole words (`by_words`); `A` is plain data.
                    // SAFETY: `i < n`, `n * width == args.len` (checked above): inside the frame's range.
                    let a = unsafe { read_word_image::<A>(src.add(i * width)) };
                    // Relaxed, as in `begin` (same pairing).
                    started_word.store(s0 + (i + 1) as u64, Ordering::Relaxed);
                    done = i;
                    match f(a) {
                        // (`out` is `dst` past the header: inside the loan; `direct`: header and values whole words.)
                        // SAFETY: as below, and the value's place is 8-aligned (`dst` is).
                        Ok(v) => unsafe { write_word_image(out.add(i * wr), v) },
                        Err(msg) => return Some(msg),
                    }
                    i += 1;
                }
                done = n;
                return None;
            }
            while done < n {
                let m = block.min(n - done);
                args.read(done * width, &mut scratch[..m * width]);
                for k in 0..m {
                    // SAFETY: `k < m <= block`: inside the scratch buffer;
                    // `A` is plain data (the caller's check): any bytes are an `A`.
                    let a = unsafe { scratch.as_ptr().add(k * width).cast::<A>().read_unaligned() };
                    // Relaxed, as in `begin` (same pairing).
                    started_word.store(s0 + (done + 1) as u64, Ordering::Relaxed);
                    match f(a) {
                        // SAFETY: `done < n`: the value's bytes lie inside the lent frame (`values` bytes, header
                        // first), which the manager does not read before commit.
                        Ok(v) => unsafe {
                            crate::shm::copy::copy_to_shared(image(&v), dst.add(frame::RESULT_HEADER_LEN + done * wr))
                        },
                        Err(msg) => return Some(msg),
                    }
                    done += 1;
                }
            }
            None
        }));
        drop(quiet);
        if let Ok(None) = r {
            loan.write_at(0, &frame::packed_result_header(self.job, self.next_first, count));
            loan.commit().map_err(|e| format!("result queue: {e}"))?;
            self.started = s0 + n as u64;
            self.next_first += u64::from(count);
            self.sent();
            return Ok(true);
        }
        // Item `done` failed: the values before it go the general way.
        let mut before = vec![0u8; done * wr];
        // SAFETY: the first `done` values were written into the lent frame
        // above (by this process, which still holds the loan).
        unsafe { crate::shm::copy::copy_from_shared(dst.add(frame::RESULT_HEADER_LEN), &mut before) };
        // The lent frame is never committed: nothing of it is published.
        let _ = loan;
        let _quiet = QuietPanics::enter();
        for v in before.chunks_exact(wr) {
            self.begun();
            self.out.bytes.extend_from_slice(v);
            self.end(Status::Ok)?;
        }
        self.begun();
        match r {
            Ok(Some(msg)) => self.failed(&msg)?,
            Err(payload) => self.panicked(payload)?,
            Ok(None) => unreachable!("handled above"),
        }
        drop(_quiet);
        let rest = n - done - 1;
        if rest > 0 {
            let mut tail = vec![0u8; rest * width];
            args.read((done + 1) * width, &mut tail);
            self.run_pod(frame::Items::new(&tail, rest as u32, true, frame::TASK_PREFIX_LEN), rest as u32, &f)?;
        }
        Ok(true)
    }

    /// Commits the `run` values written past the result frame's length.
    #[inline]
    fn end_run(&mut self, run: &mut usize, done: &mut usize, wr: usize) {
        // SAFETY: the run's values were written into the spare room
        // reserved for them (`run_pod`), every byte of them.
        unsafe { self.out.bytes.set_len(self.out.bytes.len() + *run * wr) };
        self.out.add_packed(*run as u32);
        self.started += *run as u64;
        *done += *run;
        *run = 0;
    }

    /// `begin` for an item whose `started` store was made already.
    fn begun(&mut self) {
        self.started += 1;
        self.mark = self.out.begin_item();
        self.in_item = true;
    }

    /// The item being run returned `Err(msg)`.
    #[cold]
    #[inline(never)]
    fn failed(&mut self, msg: &str) -> Result<(), String> {
        self.out.bytes.extend_from_slice(msg.as_bytes());
        self.end(Status::Failed)
    }

    #[inline]
    fn begin(&mut self) {
        self.started += 1;
        // Relaxed, after the Release fence that follows every result frame
        // sent (`sent`): that fence pairs with the Acquire loads of
        // `started` in the manager (`bury`, `in_progress`,
        // `check_timeout`), so the result frames sent before this item are
        // in the ring when the manager sees that we began it. (A Release
        // store here would be a compiler barrier in the middle of the item
        // loop.)
        self.started_word.store(self.started, Ordering::Relaxed);
        self.mark = self.out.begin_item();
        self.in_item = true;
    }

    #[inline]
    fn end(&mut self, status: Status) -> Result<(), String> {
        self.in_item = false;
        self.out.seal_item(self.mark, status as u8);
        if self.out.over() {
            self.send_all_but_last()?;
        }
        Ok(())
    }

    /// The last result does not fit in the frame: send the frame without
    /// it, and start the next one with it.
    #[cold]
    fn send_all_but_last(&mut self) -> Result<(), String> {
        let status = self.out.split_last(self.mark, &mut self.spill);
        self.next_first += u64::from(self.out.count());
        self.tx.send(self.out.seal()).map_err(|e| format!("result queue: {e}"))?;
        self.sent();
        self.out.start(self.job, self.next_first);
        self.out.push_raw(status, &self.spill);
        Ok(())
    }

    /// Sends the results written so far, if any.
    fn flush(&mut self) -> Result<(), String> {
        if self.out.count() > 0 {
            self.tx.send(self.out.seal()).map_err(|e| format!("result queue: {e}"))?;
            self.sent();
        }
        Ok(())
    }

    /// A result frame was sent: orders it before the `started` stores that
    /// follow, and tells the manager.
    fn sent(&self) {
        // Release fence: pairs with the manager's Acquire loads of
        // `started` (see `begin`): a load that sees a later store of it
        // also sees this frame in the ring.
        std::sync::atomic::fence(Ordering::Release);
        self.ctl.bump();
    }
}

/// A worker must not outlive the pool's process, even killed with SIGKILL:
/// the process layer's daemon watch sends SIGTERM, which a task may ignore
/// or handle, so this watch kills the worker (SIGKILL) when its parent
/// process ends. (`PR_SET_PDEATHSIG` would follow the thread that started
/// the worker, which may end long before the pool.)
fn die_with_parent() {
    let Some(parent) = crate::process::parent_process().map(|p| p.pid).filter(|&p| p != 0) else { return };
    crate::process::signal_self_when_parent_ends(parent, sysproc::SIGKILL, "shmproc-pool-parent-watch");
}

fn run(arg: WorkerArg) -> Result<(), String> {
    let ctl = Ctl::new(arg.ctl);
    let slot = arg.slot as usize;
    let (Some(started_word), Some(pid_word), Some(claimed_word)) = (ctl.started(slot), ctl.pid(slot), ctl.claimed(slot)) else {
        return Err(format!("worker slot {slot} is outside the control segment"));
    };
    pid_word.store(std::process::id(), Ordering::Relaxed);
    die_with_parent();
    quiet_task_panics();
    if let Some((id, init_arg)) = &arg.init {
        run_init(id, init_arg)?;
    }
    let mut rx = arg.tasks.consumer().map_err(|e| format!("task queue: {e}"))?;
    let tx = arg.results.producer().map_err(|e| format!("result queue: {e}"))?;
    let mut cx = Cx {
        ctl: &ctl,
        started_word,
        tx,
        out: ResultFrame::default(),
        spill: Vec::new(),
        started: started_word.load(Ordering::Relaxed),
        job: 0,
        next_first: 0,
        mark: 0,
        in_item: false,
        scratch: Vec::new(),
    };
    let mut frame_buf = Vec::new();
    let mut chunks_done = 0u64;
    let mut frames = 0u64;
    let mut cached: Option<(Vec<u8>, Option<task::Runners>)> = None;
    // The pool's arenas this worker has mapped (the last two).
    let mut arenas: Vec<RawSegment> = Vec::new();
    let mut arena_ref = Vec::new();
    // Closed: the pool is shutting down; Disconnected: the pool is gone.
    while let Ok(loan) = next_frame(&mut rx) {
        // The header and id first; a packed frame of plain data is run
        // with its arguments where they are (`run_pod_shared`), any other
        // is copied out whole, as before.
        let len = loan.len();
        let mut head = [0u8; frame::TASK_HEADER_LEN];
        let head_len = if len >= head.len() {
            loan.read_at(0, &mut head);
            frame::task_head_len(&head).filter(|&n| n <= len)
        } else {
            None
        };
        let whole = |buf: &mut Vec<u8>| {
            buf.clear();
            buf.resize(len, 0);
            loan.read_at(0, buf);
        };
        match head_len {
            Some(n) => {
                frame_buf.clear();
                frame_buf.resize(n, 0);
                loan.read_at(0, &mut frame_buf);
            }
            None => whole(&mut frame_buf),
        }
        let h = frame::parse_task(&frame_buf).ok_or("corrupt task frame")?;
        frames += 1;
        if !ctl::claim(claimed_word, frames)? {
            // Taken back by the pool (cancelled, or given to an idle worker).
            loan.release();
            continue;
        }
        if cached.as_ref().is_none_or(|(id, _)| id.as_slice() != h.id) {
            cached = Some((h.id.to_vec(), task::lookup_runners(h.id)));
        }
        let (job, first, count, flags) = (h.job, h.first, h.count, h.flags);
        cx.out.start(job, first);
        cx.job = job;
        cx.next_first = first;
        let runners = cached.as_ref().and_then(|(_, r)| *r);
        // A packed frame's arguments where they lie: in the pool's arena
        // (the frame carries a reference) or in the ring after the header.
        let args = match head_len {
            Some(n) if flags & frame::ARENA != 0 => Some(arena_args(&loan, n, &mut arenas, &mut arena_ref)?),
            // SAFETY: `n <= len`: the bytes after header and id, inside the lent frame, which the pool
            // does not reuse before `release` (below, after the run).
            Some(n) if flags & frame::PACKED != 0 => Some(unsafe { SharedArgs::new(loan.as_ptr().add(n), len - n) }),
            _ => None,
        };
        let in_place = match (runners, args) {
            (Some((_, Some(pod))), Some(args)) => pod(&mut cx, args, count)?,
            _ => false,
        };
        if !in_place {
            match (head_len, args) {
                (Some(n), Some(args)) if flags & frame::ARENA != 0 => {
                    // The general way for an arena frame: header and id,
                    // then its arguments copied in line.
                    frame_buf.truncate(n);
                    frame_buf.resize(n + args.len, 0);
                    args.read(0, &mut frame_buf[n..]);
                    let plain = (flags & !frame::ARENA).to_le_bytes();
                    frame_buf[20..24].copy_from_slice(&plain);
                }
                (Some(_), _) => whole(&mut frame_buf),
                (None, _) => {}
            }
            loan.release();
            let h = frame::parse_task(&frame_buf).ok_or("corrupt task frame")?;
            match runners.map(|(r, _)| r) {
                Some(run) => run(&mut cx, h.items(), h.count)?,
                None => {
                    let msg = format!("task {} is not registered in the worker", String::from_utf8_lossy(h.id));
                    cx.run_items(h.items(), h.count, |_, out| {
                        out.extend_from_slice(msg.as_bytes());
                        Status::Refused
                    })?
                }
            }
        } else {
            loan.release();
        }
        // An arena larger than the pool keeps is gone once its job ends:
        // its mapping here must not keep its memory.
        arenas.retain(|a| a.len() <= frame::SPARE_MAX);
        cx.flush()?;
        if flags & END_OF_CHUNK != 0 {
            chunks_done += 1;
            if arg.max_tasks > 0 && chunks_done >= arg.max_tasks {
                break;
            }
        }
    }
    Ok(())
}
