//! Who the calling process is: its name, identity and parent (Python's
//! `current_process()`, `parent_process()`, `_identity`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::proc as sysproc;

/// Name and identity of a process, as `current_process()` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// `MainProcess` for the top process, `Process-N` (or a chosen name).
    pub name: String,
    /// The OS process id.
    pub pid: u32,
    /// Whether it was started as a daemon.
    pub daemon: bool,
    /// Python's `_identity`: empty for the main process, `[2]` for the
    /// second child, `[2, 1]` for its first child...
    pub identity: Vec<u32>,
}

/// This process's own identity, and its parent's name and pid.
pub(super) struct Me {
    pub(super) info: ProcessInfo,
    pub(super) parent: Option<(String, u32)>,
}

static ME: Mutex<Option<Me>> = Mutex::new(None);

pub(super) fn me_lock() -> std::sync::MutexGuard<'static, Option<Me>> {
    ME.lock().unwrap_or_else(|p| p.into_inner())
}

/// The calling process's name if it is a shmproc child, without ever
/// blocking (for the panic hook: the panicking thread may hold `ME`).
pub(super) fn child_name_nonblocking() -> Option<String> {
    let me = match ME.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return None,
    };
    me.as_ref().filter(|m| m.parent.is_some()).map(|m| m.info.name.clone())
}

pub(super) fn with_me<R>(f: impl FnOnce(&Me) -> R) -> R {
    let mut me = me_lock();
    let me = me.get_or_insert_with(|| Me {
        info: ProcessInfo { name: "MainProcess".into(), pid: std::process::id(), daemon: false, identity: Vec::new() },
        parent: None,
    });
    f(me)
}

/// Makes `me` the calling process's identity (in a new child, spawned or
/// forked): it numbers its own children from 1 again.
pub(super) fn set_me(slot: &mut Option<Me>, me: Me) {
    *slot = Some(me);
    NEXT_CHILD.store(1, Ordering::Relaxed);
}

/// The calling process: `MainProcess` in the top process.
///
/// ```
/// let me = shmproc::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, std::process::id());
/// ```
pub fn current_process() -> ProcessInfo {
    with_me(|m| ProcessInfo { pid: std::process::id(), ..m.info.clone() })
}

/// The parent of the calling process, if it was started by shmproc
/// (`None` in the main process).
///
/// ```
/// assert!(shmproc::parent_process().is_none());
/// ```
pub fn parent_process() -> Option<ProcessInfo> {
    with_me(|m| {
        m.parent.as_ref().map(|(name, pid)| ProcessInfo {
            name: name.clone(),
            pid: *pid,
            daemon: false,
            identity: m.info.identity[..m.info.identity.len().saturating_sub(1)].to_vec(),
        })
    })
}

/// Number of online CPUs, like `os.cpu_count()`.
///
/// ```
/// assert!(shmproc::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    sysproc::cpu_count()
}

/// Python counts children at creation: Process-1, Process-2, ...
static NEXT_CHILD: AtomicU64 = AtomicU64::new(1);

/// The identity and default name of the next child this process creates:
/// `[.., n]` and `Process-..:n`.
pub(super) fn next_child() -> (Vec<u32>, String) {
    let n = NEXT_CHILD.fetch_add(1, Ordering::Relaxed) as u32;
    let mut identity = with_me(|m| m.info.identity.clone());
    identity.push(n);
    let name = format!("Process-{}", identity.iter().map(u32::to_string).collect::<Vec<_>>().join(":"));
    (identity, name)
}
