//! [`wait`]: one thread blocks on many objects at once, like Python's
//! `multiprocessing.connection.wait`.
//!
//! The public notes (how it waits, processes, the fallback, periodic
//! checks, an async layer on top) are on [`wait`].
//!
//! # Implementing `Waitable` for another object (e.g. a new queue)
//!
//! Inside the crate: add `mod waitable;` to the object's file and, in
//! `<file>/waitable.rs` (a child module, so it sees the private fields),
//! implement [`WaitObject`] (its contract is on the trait) and the empty
//! marker `impl Waitable for X {}`. Reuse the protocol helpers of this
//! module rather than re-deriving the handshake: a queue whose consumers
//! sleep counted in a waiter count on a ticket word (the MPMC scheme) calls
//! [`announce_counted`] / [`withdraw_counted`] with those two words and
//! returns `true` from `handshake`; a single-consumer ring end with a
//! "consumer sleeps" flag on the peer's index calls [`announce_flag`] /
//! [`withdraw_flag`]; both return [`handshake_poll`] (or their own
//! liveness poll) from `prepare`. `ready(false)` must be plain loads of
//! the same words the object's `try_` call looks at.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Deadline;
use super::handshake;
#[cfg(loom)]
use super::spin::spin_hint;
use super::spin::{POLL, SPIN_LIMIT};
use crate::sys::futex::{self as sysfutex, WAITV_MAX, WaitvOutcome, WaitvWord};

/// The most objects one [`wait`] takes (`futex_waitv`'s limit of 128
/// words; each object sleeps on one word).
///
/// ```
/// assert_eq!(shmproc::WAIT_MAX_OBJECTS, 128);
/// ```
pub const MAX_OBJECTS: usize = WAITV_MAX;

/// How often the fallback (no `futex_waitv`) re-checks every object.
const FALLBACK_POLL: Duration = Duration::from_millis(1);

/// Set once the kernel answered `ENOSYS` to `futex_waitv`.
static NO_WAITV: AtomicBool = AtomicBool::new(false);

/// Why [`wait`] could not wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// No objects were given: nothing could ever become ready.
    #[error("wait on no objects")]
    NoObjects,
    /// More objects than one `futex_waitv` call can sleep on.
    #[error("wait on {count} objects: at most {max} at once")]
    TooMany {
        /// How many objects were given.
        count: usize,
        /// The limit, [`MAX_OBJECTS`].
        max: usize,
    },
}

/// The objects that were ready, by their index in the list given to
/// [`wait`] (a set of up to [`MAX_OBJECTS`] indices).
///
/// ```
/// let (a, b) = (shmproc::Event::new().unwrap(), shmproc::Event::new().unwrap());
/// b.set();
/// let (mut a2, mut b2) = (a.clone(), b.clone());
/// let ready = shmproc::wait(&mut [&mut a2, &mut b2], None).unwrap();
/// assert_eq!(ready.iter().collect::<Vec<_>>(), [1]);
/// assert!(ready.contains(1) && !ready.contains(0));
/// assert_eq!(ready.len(), 1);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready {
    bits: u128,
}

/// The indices, as a set: `{1, 3}`.
impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Ready {
    /// Whether no object was ready (the timeout passed).
    ///
    /// ```
    /// assert!(shmproc::WaitReady::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// How many objects were ready.
    ///
    /// ```
    /// assert_eq!(shmproc::WaitReady::default().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.bits.count_ones() as usize
    }

    /// Whether the object at `index` was ready.
    ///
    /// ```
    /// assert!(!shmproc::WaitReady::default().contains(3));
    /// ```
    pub fn contains(&self, index: usize) -> bool {
        index < MAX_OBJECTS && self.bits & (1 << index) != 0
    }

    /// The ready objects' indices, in increasing order.
    ///
    /// ```
    /// assert_eq!(shmproc::WaitReady::default().iter().count(), 0);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        let bits = self.bits;
        (0..MAX_OBJECTS).filter(move |&i| bits & (1 << i) != 0)
    }

    fn insert(&mut self, index: usize) {
        self.bits |= 1 << index;
    }
}

pub(crate) mod sealed {
    use super::*;

    /// The futex words a multi-waiter sleeps on, with the value each must
    /// still hold (filled by [`WaitObject::announce`]).
    #[derive(Debug, Default)]
    pub struct Words {
        pub(super) list: Vec<WaitvWord>,
    }

    impl Words {
        /// Sleep while `word` holds `expected`.
        pub(crate) fn push(&mut self, word: &AtomicU32, expected: u32) {
            self.list.push(WaitvWord { word: word as *const AtomicU32, expected });
        }

        /// Sleep while the low half of `word` (the futex half of the
        /// crate's 64-bit words) holds `expected_low`.
        pub(crate) fn push_low(&mut self, word: &AtomicU64, expected_low: u32) {
            // The low half is the first four bytes (little-endian, checked at the crate root); only the kernel
            // reads it as a 32-bit word.
            self.list.push(WaitvWord { word: word.as_ptr() as *const AtomicU32, expected: expected_low });
        }
    }

    /// The contract every [`Waitable`] object fulfils (sealed: implemented
    /// inside the crate only).
    ///
    /// The rules, for an implementer:
    /// - [`ready`](Self::ready) says whether the object's own blocking call
    ///   (get, recv, acquire, wait, join) would return now, with an item or
    ///   an error. Without `thorough` it uses plain loads only (no syscall,
    ///   no fence, no write to shared memory); with `thorough` it may also
    ///   look at what no word reports (a peer's liveness in `/proc`).
    /// - [`announce`](Self::announce) registers this thread as a sleeper
    ///   *exactly* as the object's own blocking call does before it sleeps
    ///   (same words, same orderings), reading the value to sleep on before
    ///   (or atomically with) the registration, and pushes at most one word
    ///   to `words`. It returns `None` when it found the object ready
    ///   instead (then nothing stays registered and nothing is pushed).
    /// - After every `announce` returning `Some(token)` comes exactly one
    ///   [`withdraw`](Self::withdraw) with that token, which undoes the
    ///   registration; if the object's wakers wake only some sleepers and
    ///   the object is ready with other sleepers still counted, it passes
    ///   the wake-up on.
    /// - [`handshake`](Self::handshake): the object's wakers skip the CPU
    ///   fence (`fence_before_waiter_check`); the caller then issues the
    ///   heavy barrier once between the announcements and the re-check.
    /// - [`prepare`](Self::prepare) is called once per `wait`, before
    ///   the first announcement (the slow path only: it may make system
    ///   calls, e.g. start a helper); it returns the longest the caller may
    ///   sleep before a `thorough` re-check (something no wake-up reports).
    pub trait WaitObject {
        /// Whether the object's blocking call would return now.
        fn ready(&mut self, thorough: bool) -> bool;
        /// Registers as a sleeper and pushes the word to sleep on; `None`:
        /// ready now, nothing registered.
        fn announce(&mut self, words: &mut Words) -> Option<u64>;
        /// Undoes the registration `token` of [`announce`](Self::announce).
        fn withdraw(&mut self, token: u64);
        /// Whether the heavy barrier must follow the announcement.
        fn handshake(&self) -> bool {
            false
        }
        /// Before sleeping: the longest sleep before a thorough re-check;
        /// `None`: no limit.
        fn prepare(&mut self) -> Option<Duration> {
            None
        }
        /// After an [`announce`](Self::announce) that returned `Some`: the
        /// longest this sleep may last (a word that not every change of
        /// the object bumps, e.g. an unbounded queue waiting for /dev/shm
        /// space); `None`: no limit beyond `prepare`'s.
        fn sleep_cap(&self) -> Option<Duration> {
            None
        }
    }
}

pub(crate) use sealed::{WaitObject, Words};

/// An object [`wait`] can block on: queues (readable: an item, or the
/// error the next get would return), pipe ends (readable), events (set),
/// semaphores (a unit to take), processes (ended).
///
/// "Ready" means the object's own blocking call (`get`, `pop`, `recv`,
/// `acquire`, `Event::wait`, `join`) would return now, with a value or an
/// error: a closed queue, a pipe end whose sender is gone, a process that
/// was never started are ready. Nothing is consumed: a semaphore unit or a
/// queue item is still there for the next call (unless another process
/// takes it first, as with Python's `wait`).
///
/// Costs left behind: an [`Event`](crate::Event) keeps the "somebody
/// sleeps" bit a `wait` set on it until its next `set`, which then makes
/// one `FUTEX_WAKE` (as after an `Event::wait_timeout` that timed out);
/// the other objects' announcements are undone when `wait` returns.
///
/// A queue counts an item from the moment a producer claimed its slot (as
/// `qsize` does), so right after `wait` a `get_nowait` can still find it
/// `Empty` while that producer finishes writing; `get_timeout` (or `get`)
/// waits for it.
///
/// Implemented inside the crate only (the trait is sealed).
///
/// ```
/// use shmproc::{Event, Semaphore, Queue};
/// let mut ev = Event::new().unwrap();
/// let mut sem = Semaphore::new(0).unwrap();
/// let mut q = Queue::<u32>::new(4).unwrap();
/// q.put(7).unwrap();
/// let ready = shmproc::wait(&mut [&mut ev, &mut sem, &mut q], None).unwrap();
/// assert_eq!(ready.iter().collect::<Vec<_>>(), [2]);
/// assert_eq!(q.get(), Ok(7)); // the item is still there
/// ```
pub trait Waitable: WaitObject {}

/// Blocks until at least one of `objects` is ready or `timeout` passes
/// (`None`: no timeout; a timeout too large to represent also means none),
/// and returns the ready ones by index, like Python's
/// `multiprocessing.connection.wait(object_list, timeout)`. An empty
/// [`Ready`] means the timeout passed.
///
/// While it blocks it uses almost no CPU: it sleeps in one `futex_waitv`
/// on all the objects' words, waking every 100 ms to re-check (see below
/// for why, for the fallback on older kernels and other periodic checks).
/// When an object is ready already, it returns without any system call.
///
/// Errors: [`WaitError::NoObjects`], [`WaitError::TooMany`] (more than
/// [`MAX_OBJECTS`]).
///
/// # How it waits
///
/// 1. **Ready path.** Every object's readiness is checked with plain loads
///    of its shared words (no syscall, no fence); if any is ready, `wait`
///    returns at once. Then it spins a little (as [`Event::wait`] does),
///    re-checking with plain loads.
/// 2. **Announce.** On each object it announces itself exactly as that
///    object's own blocking call does (the event's WAITERS bit, the
///    semaphore's sleeper count, the MPMC queue's consumer count, the SPSC
///    consumer's `consumer_waiting` flag...) and notes the futex word to
///    sleep on with the value it must still hold. So the objects' wakers
///    stay as they are: an uncontended put/get/set/release still makes no
///    syscall and executes no fence, and wakes us when, and only when, it
///    would wake the object's own sleeper.
/// 3. **One barrier, one re-check.** Objects whose wakers skip the CPU fence
///    (the queues' asymmetric handshake) need the heavy `membarrier` after
///    the announcement: it is issued once for all of them. Then every
///    object is re-checked.
/// 4. **Sleep** on all the words at once with `futex_waitv` (Linux 5.16+;
///    at most 128 words, so at most [`MAX_OBJECTS`] objects).
/// 5. **Withdraw** every announcement. Where a waker wakes only *n*
///    sleepers (a semaphore's `release(n)`, a queue's `put`), a `wait`
///    woken in place of a real getter must not swallow the wake-up: if the
///    object is ready and other sleepers are still counted, the wake-up is
///    passed on (one `FUTEX_WAKE`, only in that contended case).
/// 6. **Re-check at least every 100 ms.** A wake-up that reached a process
///    killed before it ran is gone with it (the kernel chose that sleeper),
///    so no sleep lasts longer than 100 ms before every object is checked
///    again, as [`Semaphore::acquire`](crate::Semaphore::acquire)'s own
///    sleep does. A blocked `wait` thus costs one short wake-up every
///    100 ms, and a ready object it missed that way is seen within 100 ms.
///
/// # Processes
///
/// A child killed with SIGKILL writes nothing anywhere, so a process's end
/// is turned into a futex word here: the first time a `wait` includes a
/// child, a helper thread is started for it (default stack: recording the end
/// runs the application's logger) that blocks in
/// `poll(2)` on the child's pidfd; when the child ends, the thread reaps
/// it, bumps a process-wide "deaths" word and wakes its sleepers, then
/// exits. Cost: one thread creation per child ever waited on, no CPU while
/// it waits, one `FUTEX_WAKE` per death. Readiness of a process is a
/// look at its recorded end (a try-lock, no syscall). Without
/// pidfds (Linux < 5.3) no thread is started: `wait` then caps each sleep
/// at 10 ms and asks `waitpid` each time.
///
/// # Fallback for kernels without `futex_waitv` (Linux < 5.16)
///
/// `wait` sleeps on the first object's word alone, for at most 1 ms at a
/// time, re-checking every object in between: a wake-up of the first
/// object is immediate, any other is seen within about 1 ms, and the
/// waiting thread wakes about 1000 times a second (a few µs of CPU each).
///
/// # Other periodic checks
///
/// Like their own blocking calls, an SPSC consumer and a pipe end look at
/// their sender's liveness in `/proc` (a SIGKILLed sender sets no flag), so
/// a `wait` including one wakes every 100 ms. So does a `wait` on an MPMC
/// queue in a process where `membarrier` is refused. Events, semaphores,
/// MPMC queues (with `membarrier`) and processes (with pidfds) need no
/// periodic wake-up: a thread waiting only on them does not run at all.
///
/// # Building an async layer on it
///
/// The [`Waitable`] contract splits waiting so that the part that needs the
/// object and the part that sleeps can live in different places: one
/// reactor thread sleeps for many futures, with wakers registered per
/// word.
/// - A future's `poll` tries the non-blocking call (`get_nowait`,
///   `try_recv`, `try_acquire`...). If it refuses, the future announces
///   itself on its object (the object's `announce`, as above), re-checks
///   (`ready`; the heavy barrier first where `handshake` says so, which a
///   reactor can batch), and if still not ready hands the reactor the
///   announced word, its expected value and the task's `Waker`, then
///   returns `Pending`. On its next `poll` it withdraws before retrying.
/// - The reactor keeps, per word, the wakers registered on it, and sleeps
///   in one `futex_waitv` on all the words plus one word of its own that a
///   registering future bumps and wakes (so a new word joins the sleep).
///   When `futex_waitv` returns the index of a woken word it wakes that
///   word's wakers; on "a value changed" it wakes every waker whose word no
///   longer holds its expected value; on a poll deadline (`prepare`) it
///   wakes the wakers of the objects that asked for one.
///
/// No object needs a thread or an fd, and the notifiers stay as they are:
/// a put, send, set or release wakes the reactor exactly when it would
/// wake a blocked thread, and still makes no syscall when nobody waits.
///
/// [`Event::wait`]: crate::Event::wait
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use shmproc::{Process, Queue};
/// shmproc::entry! { fn work(q: Queue<u64>) { q.put(42).unwrap(); } }
///
/// let mut results = Queue::<u64>::new(8).unwrap();
/// let mut p = Process::new(work, results.clone());
/// p.start().unwrap();
/// let ready = shmproc::wait(&mut [&mut results, &mut p], Some(Duration::from_secs(10))).unwrap();
/// assert!(!ready.is_empty());
/// assert_eq!(results.get(), Ok(42));
/// p.join().unwrap();
/// ```
pub fn wait(objects: &mut [&mut dyn Waitable], timeout: Option<Duration>) -> Result<Ready, WaitError> {
    wait_until(objects, timeout.map_or(Deadline::NEVER, Deadline::after))
}

/// [`wait`] with a [`Deadline`].
pub(crate) fn wait_until(objects: &mut [&mut dyn Waitable], deadline: Deadline) -> Result<Ready, WaitError> {
    if objects.is_empty() {
        return Err(WaitError::NoObjects);
    }
    if objects.len() > MAX_OBJECTS {
        return Err(WaitError::TooMany { count: objects.len(), max: MAX_OBJECTS });
    }
    // The ready path: plain loads only.
    let ready = scan(objects, false);
    if !ready.is_empty() {
        return Ok(ready);
    }
    // A zero timeout is a poll: no spinning.
    for _ in 0..if deadline.passed() { 0 } else { SPIN_LIMIT } {
        // No pause between scans: a scan of the objects is itself the
        // delay between checks. With a pause as well, `wait` on 4 objects
        // noticed a wake-up 1.30-1.41x later than `Event::wait` in the
        // machine's fast core-to-core state; without, 1.06-1.11x
        // (benches/wait.rs, old and new builds alternating). Under loom the
        // hint is a yield, which the model needs.
        //
        // Tried and measured worse in the fast state (branch `waitfast2`,
        // chrt -f 5, this scan alternating with each, means of 20-76 runs):
        // the ready path noting each object's words with the values read,
        // and rounds comparing them (a few loads, no call), asking only an
        // object whose word changed: 1.30-1.33x with a pause per round
        // (this scan 1.15-1.17x in the same runs), 1.40-1.56x without
        // pause, worse with a short busy delay instead of the pause; and
        // this scan without the result set built per round (fewer
        // instructions per round): 1.34x against 1.15x. Fewer instructions
        // per round did not mean an earlier wake-up here.
        //
        // Tried again (branch `wait3`, benches/wait.rs's binary, this build
        // and each alternating in the same minutes, 20-60 pairs, quiet
        // minutes of the shared VM): watched words (an event's state and a
        // semaphore's count judged as masks, an MPMC tail compared with the
        // value seen) loaded with no call and a pause per round, the words
        // re-read in place after a change, the ready pass inlined into the
        // caller (27 -> 23 ns, 165 -> ~122 instructions): 1.41x against
        // this scan's 1.34x (Event::wait 44 ns), 1.45x against 1.08x (58
        // ns), even at 62 ns; with an inlined scan as the ready pass
        // (12 ns) 1.38x against 1.34x; this scan unchanged but the ready
        // pass inlined and the spin out of line: 1.34x against 1.15x. A
        // re-check after a change in a function of its own cost ~15 ns
        // more. (Probes interleaving variants inside one process ranked
        // the watched words first, 1.19-1.24x against 1.27-1.41x: the
        // bench's own binary did not follow.)
        #[cfg(loom)]
        spin_hint();
        let ready = scan(objects, false);
        if !ready.is_empty() {
            return Ok(ready);
        }
    }
    sleep_loop(objects, deadline)
}

/// The readiness of every object.
#[inline]
fn scan(objects: &mut [&mut dyn Waitable], thorough: bool) -> Ready {
    let mut ready = Ready::default();
    for (i, o) in objects.iter_mut().enumerate() {
        if o.ready(thorough) {
            ready.insert(i);
        }
    }
    ready
}

/// The slow path: announce, re-check, sleep, withdraw, until something is
/// ready or the deadline passes.
#[cold]
#[inline(never)]
fn sleep_loop(objects: &mut [&mut dyn Waitable], deadline: Deadline) -> Result<Ready, WaitError> {
    let mut words = Words::default();
    let mut tokens: Vec<Option<u64>> = Vec::with_capacity(objects.len());
    let poll = objects.iter_mut().filter_map(|o| o.prepare()).min();
    let handshake_needed = objects.iter().any(|o| o.handshake());
    // The first check on the slow path is thorough (a child's end asked of
    // the kernel, a sender's liveness of /proc): a poll (`timeout` 0) sees
    // a child that already ended or a sender that was killed, as Python's
    // `connection.wait` does.
    let mut thorough = true;
    let mut last_thorough = Instant::now();
    loop {
        let ready = scan(objects, thorough);
        if !ready.is_empty() || deadline.passed() {
            return Ok(ready);
        }
        words.list.clear();
        tokens.clear();
        let mut sleep = true;
        for o in objects.iter_mut() {
            let token = o.announce(&mut words);
            tokens.push(token);
            if token.is_none() {
                sleep = false;
                break;
            }
        }
        if sleep && handshake_needed {
            // Pairs with the wakers' compiler-fenced load of the sleeper
            // flags/counts after their publishing store.
            handshake::after_announcing();
        }
        if sleep && scan(objects, false).is_empty() && dedup(&mut words.list) {
            // Never longer than POLL: the wakers of semaphores and queues
            // wake one sleeper, and a wake that reached a process killed
            // before it ran is gone; the re-check after POLL sees the
            // object ready (as Semaphore::acquire's own sleep does).
            let cap = objects.iter().filter_map(|o| o.sleep_cap()).chain(poll).chain(Some(POLL)).min();
            let until = cap.map_or(deadline, |p| deadline.capped(p));
            sleep_on(&words.list, until);
        }
        for (o, token) in objects.iter_mut().zip(&tokens) {
            if let Some(t) = *token {
                o.withdraw(t);
            }
        }
        // A thorough check (e.g. /proc) at most once per poll period.
        thorough = poll.is_some_and(|p| last_thorough.elapsed() >= p);
        if thorough {
            last_thorough = Instant::now();
        }
    }
}

/// Removes repeated words (several processes share the deaths word).
/// False if one word was noted with two different values: it changed
/// between two announcements, so there is news; do not sleep.
fn dedup(list: &mut Vec<WaitvWord>) -> bool {
    let mut i = 0;
    while i < list.len() {
        let w = list[i];
        if let Some(first) = list[..i].iter().find(|x| std::ptr::eq(x.word, w.word)) {
            if first.expected != w.expected {
                return false;
            }
            list.remove(i);
        } else {
            i += 1;
        }
    }
    true
}

/// One sleep on all `words` until woken or `until`.
fn sleep_on(words: &[WaitvWord], until: Deadline) {
    if words.is_empty() {
        return;
    }
    if !NO_WAITV.load(Ordering::Relaxed) && !force_fallback() {
        // SAFETY: every word was pushed by an object's `announce` from a field of that object's control block (in
        // the mapping the object keeps alive) or from a static; the objects are borrowed for the whole `wait`.
        match unsafe { sysfutex::waitv(words, until.instant()) } {
            WaitvOutcome::Unsupported { permanent } => {
                if permanent {
                    NO_WAITV.store(true, Ordering::Relaxed);
                }
            }
            _ => return,
        }
    }
    fallback(words, until);
}

/// Without `futex_waitv`: sleep on the first word, for at most
/// [`FALLBACK_POLL`] (the caller re-checks every object).
fn fallback(words: &[WaitvWord], until: Deadline) {
    let w = words[0];
    // SAFETY: as in `sleep_on`: the word is a live atomic for the whole `wait`.
    let word = unsafe { &*w.word };
    sysfutex::wait(word, w.expected, until.capped(FALLBACK_POLL).instant());
}

/// Tests force the fallback with `SHMPROC_WAITV_FALLBACK=1` (read once).
fn force_fallback() -> bool {
    static FORCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCE.get_or_init(|| cfg!(feature = "test-hooks") && std::env::var_os("SHMPROC_WAITV_FALLBACK").is_some())
}

/// The announcement of a sleeper counted in `waiting` that sleeps on the
/// ticket word `seq` (the MPMC queues' protocol, see `MpmcQueue::sleep`):
/// read the ticket, then count ourselves (SeqCst; the caller's object
/// reports [`handshake`](WaitObject::handshake) so the heavy barrier
/// follows). For queue implementations.
pub(crate) fn announce_counted(waiting: &AtomicU32, seq: &AtomicU32, words: &mut Words) {
    announce_counted_unless(waiting, seq, words, || false);
}

/// [`announce_counted`], unless `stop()`, asked after the ticket was read,
/// says not to sleep (then nothing is registered or pushed; false). For a
/// word that is bumped when `stop()` becomes true: a `stop()` that reads
/// false was read before that bump, so the sleep on the ticket cannot
/// miss it.
pub(crate) fn announce_counted_unless(
    waiting: &AtomicU32,
    seq: &AtomicU32,
    words: &mut Words,
    stop: impl FnOnce() -> bool,
) -> bool {
    // Acquire: pairs with the Release bump of the waker (`MpmcQueue::wake`,
    // `close`): what preceded the bump is visible to `stop()`.
    let ticket = seq.load(Ordering::Acquire);
    if stop() {
        return false;
    }
    // SeqCst, then the heavy barrier (issued by `wait`): pairs with the
    // waker's compiler-fenced load of `waiting` after its publishing store.
    waiting.fetch_add(1, Ordering::SeqCst);
    words.push(seq, ticket);
    true
}

/// Undoes [`announce_counted`]. The wakers of such a queue wake one
/// sleeper per item: if we may have taken the wake-up of a real getter
/// (the object is `ready` and other sleepers are counted), pass it on.
pub(crate) fn withdraw_counted(waiting: &AtomicU32, seq: &AtomicU32, ready: impl FnOnce() -> bool) {
    let before = waiting.fetch_sub(1, Ordering::Relaxed);
    if before > 1 && ready() {
        // Release: pairs with the sleepers' Acquire ticket load.
        seq.fetch_add(1, Ordering::Release);
        super::futex::wake32(seq, 1);
    }
}

/// The announcement of the one sleeper of an SPSC-style ring end: its
/// flag set to 1 (SeqCst; the object reports [`handshake`](WaitObject::handshake)),
/// sleeping on the flag while it holds 1, as `queue::wake::sleep_on` does
/// (the peer's publish, `close` and a detach clear it before they wake).
pub(crate) fn announce_flag(flag: &AtomicU32, words: &mut Words) {
    // SeqCst, then the heavy barrier: pairs with the peer's plain
    // (compiler-fenced) flag load after its index store, and with the
    // SeqCst clear in `wake_sleeper`.
    flag.store(1, Ordering::SeqCst);
    words.push(flag, 1);
}

/// Undoes [`announce_flag`].
pub(crate) fn withdraw_flag(flag: &AtomicU32) {
    flag.store(0, Ordering::Relaxed);
}

/// The [`prepare`](WaitObject::prepare) answer of an object whose
/// sleepers use the asymmetric handshake: none while this process uses
/// `membarrier`; where it is refused, the queues' own `POLL` (the window
/// in which a waker may not yet have seen the shared `fences` word).
pub(crate) fn handshake_poll() -> Option<Duration> {
    if crate::sys::membarrier::available() { None } else { Some(super::spin::POLL) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keeps_one_entry_per_word_and_refuses_two_values() {
        let (a, b) = (AtomicU32::new(0), AtomicU32::new(0));
        let w = |x: &AtomicU32, v| WaitvWord { word: x as *const AtomicU32, expected: v };
        let mut list = vec![w(&a, 1), w(&b, 2), w(&a, 1), w(&b, 2), w(&a, 1)];
        assert!(dedup(&mut list));
        assert_eq!(list.len(), 2);
        assert!(std::ptr::eq(list[0].word, &a) && std::ptr::eq(list[1].word, &b));
        let mut list = vec![w(&a, 1), w(&b, 2), w(&a, 3)];
        assert!(!dedup(&mut list), "a word seen with two values changed: no sleep");
    }

    #[test]
    fn ready_lists_its_indices() {
        let mut r = Ready::default();
        for i in [0, 5, 127] {
            r.insert(i);
        }
        assert_eq!(r.iter().collect::<Vec<_>>(), [0, 5, 127]);
        assert_eq!(r.len(), 3);
        assert!(r.contains(127) && !r.contains(128) && !r.contains(1));
        assert_eq!(format!("{r:?}"), "{0, 5, 127}");
    }

    #[test]
    fn futex_waitv_sleeps_until_a_word_changes_or_the_deadline() {
        let (a, b) = (AtomicU32::new(0), AtomicU32::new(7));
        let words = [WaitvWord { word: &a, expected: 0 }, WaitvWord { word: &b, expected: 7 }];
        let soon = Some(Instant::now() + Duration::from_millis(5));
        // SAFETY: both words live through the call.
        assert_eq!(unsafe { sysfutex::waitv(&words, soon) }, WaitvOutcome::TimedOut);
        b.store(8, Ordering::SeqCst);
        // SAFETY: as above.
        assert_eq!(unsafe { sysfutex::waitv(&words, None) }, WaitvOutcome::Changed);
    }
}
