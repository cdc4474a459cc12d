//! [`Process`] as a [`Waitable`](crate::Waitable): ready once the child
//! ended (or when `join` would fail at once: not started, closed).
//!
//! A child killed with SIGKILL writes nothing, so its end is turned into a
//! futex word here: the first `wait` that includes a child starts a helper
//! thread (default stack: recording the end runs the application's logger) blocked in `poll` on the child's pidfd. When
//! the child ends, the thread reaps it (recording its end as `join`
//! would), bumps [`DEATHS`] and wakes its sleepers, then exits. Cost: one
//! thread creation per child ever waited on, one `FUTEX_WAKE` per death,
//! no CPU meanwhile. Without a pidfd (Linux < 5.3), or if the thread
//! cannot start, `wait` re-checks with `waitpid` every [`NO_WATCH_POLL`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Process;
use super::children::Inner;
use crate::sys::proc as sysproc;
use crate::wait::futex::wake32;
use crate::wait::many::{WaitObject, Waitable, Words};

/// Bumped (and woken) by a watcher thread after it recorded a child's end.
static DEATHS: AtomicU32 = AtomicU32::new(0);

/// The children that have a watcher thread (their `Inner`'s address; the
/// thread's `Weak` keeps the allocation, so the address is not reused
/// while it is listed).
static WATCHED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// The list of watched children, locked (the fork path holds it across
/// `fork()` and empties it in the child, whose copy names threads that
/// only exist in the parent).
pub(super) fn watched() -> std::sync::MutexGuard<'static, Vec<usize>> {
    WATCHED.lock().unwrap_or_else(|p| p.into_inner())
}

/// How often `wait` asks `waitpid` about a child it cannot watch.
const NO_WATCH_POLL: Duration = Duration::from_millis(10);

/// Starts the watcher of `inner` unless it runs; false if it cannot run.
fn watch(inner: &Arc<Inner>) -> bool {
    let key = Arc::as_ptr(inner) as usize;
    let mut list = watched();
    if list.contains(&key) {
        return true;
    }
    let Some(fd) = inner.pidfd.as_ref().and_then(|fd| fd.try_clone().ok()) else {
        return false;
    };
    let weak = Arc::downgrade(inner);
    let spawned = std::thread::Builder::new().name("shmproc-wait-child".into()).spawn(move || {
        while !sysproc::pidfd_wait(&fd, None) {
            // A failed poll (not EINTR, which it retries): try again a little later rather than spin.
            std::thread::sleep(NO_WATCH_POLL);
        }
        if let Some(inner) = weak.upgrade() {
            inner.poll(false);
        }
        watched().retain(|&k| k != key);
        drop(weak);
        // Release: pairs with the Acquire ticket load in `announce`: a
        // waiter that reads the new count sees the end recorded above.
        DEATHS.fetch_add(1, Ordering::Release);
        wake32(&DEATHS, u32::MAX);
    });
    if spawned.is_ok() {
        list.push(key);
    }
    spawned.is_ok()
}

impl Process {
    /// The started, not closed child's state; `None`: `join` fails at once.
    fn waitable_inner(&self) -> Option<&Arc<Inner>> {
        if self.closed { None } else { self.inner.as_ref() }
    }
}

impl WaitObject for Process {
    fn ready(&mut self, thorough: bool) -> bool {
        let Some(inner) = self.waitable_inner() else { return true };
        if thorough {
            // Without a watcher (no pidfd, or the thread could not start), ask the kernel.
            return inner.poll(false).is_some();
        }
        // No syscall, no lock: the end recorded by a watcher, `join`,
        // `is_alive`... (a lock held by another thread polling this child
        // once read as "still running", and the wait slept on a DEATHS
        // value that no later death would change). Acquire: pairs with the
        // Release store in `Inner::poll` after it recorded the end.
        inner.ended_flag.load(Ordering::Acquire)
    }
    fn announce(&mut self, words: &mut Words) -> Option<u64> {
        self.waitable_inner()?;
        // Acquire: pairs with the watcher's Release bump (after it recorded the end).
        words.push(&DEATHS, DEATHS.load(Ordering::Acquire));
        Some(0)
    }
    fn withdraw(&mut self, _token: u64) {}
    fn prepare(&mut self) -> Option<Duration> {
        let inner = self.waitable_inner()?;
        if watch(inner) { None } else { Some(NO_WATCH_POLL) }
    }
}

/// Ready once the child ended (or `join` would fail at once).
impl Waitable for Process {}
