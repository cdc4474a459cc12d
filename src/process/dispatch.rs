//! The child side of a spawned process: before `main`, a constructor
//! finds the child marker in the environment, runs the requested entry and
//! exits; and what every child (spawned or forked) does around its entry.

use std::ffi::OsString;

use super::entry::{self, Outcome};
use super::identity::{Me, ProcessInfo, me_lock, set_me};
use super::{LOG_TARGET, log_to_stderr, logging, status};
use crate::RawSegment;
use crate::sys::proc as sysproc;

const ENV_ENTRY: &str = "SHMPROC_ENTRY";
const ENV_SEGMENT: &str = "SHMPROC_SEGMENT";
const ENV_NAME: &str = "SHMPROC_NAME";
const ENV_IDENTITY: &str = "SHMPROC_IDENTITY";
const ENV_PARENT: &str = "SHMPROC_PARENT";
const ENV_DAEMON: &str = "SHMPROC_DAEMON";
const ENV_LOG: &str = "SHMPROC_LOG";
/// This process's executable file, whatever became of its path since.
const SELF_EXE: &str = "/proc/self/exe";

/// The command that re-executes this program as the child `name` running
/// entry `entry_id`, with the environment [`child_dispatch`] reads.
pub(super) fn child_command(
    entry_id: &str,
    seg_name: &str,
    name: &str,
    identity: &[u32],
    daemon: bool,
    parent: &ProcessInfo,
) -> std::io::Result<std::process::Command> {
    let identity = identity.iter().map(u32::to_string).collect::<Vec<_>>().join(":");
    let exe = std::env::current_exe()?;
    // The running program itself, through its /proc link: the path may
    // name another file by now (a rebuild, an upgrade installed over it:
    // whose entries are not ours) or none (removed: `current_exe` then
    // ends in " (deleted)"). The path stays the child's argv[0].
    let mut cmd = if std::path::Path::new(SELF_EXE).exists() {
        let mut cmd = std::process::Command::new(SELF_EXE);
        std::os::unix::process::CommandExt::arg0(&mut cmd, &exe);
        cmd
    } else {
        std::process::Command::new(exe)
    };
    cmd.arg("--shmproc-child")
        .env(ENV_ENTRY, entry_id)
        .env(ENV_SEGMENT, seg_name)
        .env(ENV_NAME, name)
        .env(ENV_IDENTITY, identity)
        .env(ENV_PARENT, format!("{}:{}", parent.pid, parent.name))
        .env(ENV_DAEMON, if daemon { "1" } else { "0" })
        .stdin(std::process::Stdio::null());
    if let Some(level) = logging::child_level() {
        cmd.env(ENV_LOG, level.as_str());
    }
    Ok(cmd)
}

/// Runs in every process built with shmproc, before `main`: if this
/// process is a spawned child, run its entry and exit; otherwise return.
extern "C" fn child_dispatch() {
    let Some(entry_id) = std::env::var_os(ENV_ENTRY) else {
        return;
    };
    // The entry runs before std's runtime set-up: do its part that code
    // relies on, as the parent's `main` had it (std's `Command` reset
    // SIGPIPE to its default for the exec).
    sysproc::ignore_sigpipe();
    let take = |k: &str| std::env::var_os(k).unwrap_or_default();
    let (seg_name, name, identity, parent, daemon) =
        (take(ENV_SEGMENT), take(ENV_NAME), take(ENV_IDENTITY), take(ENV_PARENT), take(ENV_DAEMON));
    if let Some(level) = std::env::var_os(ENV_LOG).and_then(|l| l.to_str()?.parse().ok()) {
        // The parent logs to stderr (`log_to_stderr`): so does the child, as
        // in Python.
        log_to_stderr(level);
    }
    for k in [ENV_ENTRY, ENV_SEGMENT, ENV_NAME, ENV_IDENTITY, ENV_PARENT, ENV_DAEMON, ENV_LOG] {
        // SAFETY: this runs before main, single-threaded: nobody else reads
        // or writes the environment concurrently.
        unsafe { std::env::remove_var(k) };
    }
    let code = spawned_child_main(entry_id, seg_name, name, identity, parent, daemon);
    std::process::exit(code);
}

/// The dispatcher, in the unprioritised `.init_array`: it runs after every
/// `entry!` registration (`.init_array.00500`) and after std's own setup.
#[used]
#[unsafe(link_section = ".init_array")]
pub(super) static CHILD_DISPATCH: extern "C" fn() = child_dispatch;

fn spawned_child_main(
    entry_id: OsString,
    seg_name: OsString,
    name: OsString,
    identity: OsString,
    parent: OsString,
    daemon: OsString,
) -> i32 {
    let name = name.to_string_lossy().into_owned();
    let identity: Vec<u32> = identity.to_string_lossy().split(':').filter_map(|s| s.parse().ok()).collect();
    let parent = parent.to_string_lossy().into_owned();
    let (parent_pid, parent_name) = parent.split_once(':').unwrap_or(("0", "MainProcess"));
    let parent_pid: u32 = parent_pid.parse().unwrap_or(0);
    let daemon = daemon == "1";
    set_me(
        &mut me_lock(),
        Me {
            info: ProcessInfo { name: name.clone(), pid: std::process::id(), daemon, identity },
            parent: Some((parent_name.to_owned(), parent_pid)),
        },
    );
    name_panics();
    let seg_name = seg_name.to_string_lossy();
    let seg = RawSegment::open(&seg_name);
    // The mapping is all we need: remove the name at once, so nothing is
    // left in /dev/shm whatever happens to either process later (before
    // watching the parent: a daemon whose parent is gone ends at once).
    let _ = crate::unlink(&seg_name);
    if daemon {
        watch_parent(parent_pid);
    }
    let seg = match seg {
        Ok(s) if s.len() >= status::ARG => s,
        Ok(_) => return fail_early(&name, "status segment too small"),
        Err(e) => return fail_early(&name, &format!("cannot open status segment: {e}")),
    };
    // The parent hands the argument's pipe roles over to us first.
    status::wait_handed(&seg, || sysproc::parent_pid() == parent_pid);
    let entry_id = entry_id.to_string_lossy().into_owned();
    log::debug!(target: LOG_TARGET, "process {name} (pid {}) runs entry {entry_id}", std::process::id());
    let outcome = match entry::lookup(&entry_id) {
        None => Outcome::Startup(format!("unknown entry id {entry_id:?}: not registered in this executable")),
        Some(run) => {
            let mut len = [0u8; 8];
            seg.read(status::ARG_LEN, &mut len);
            let len = u64::from_le_bytes(len) as usize;
            let mut arg = vec![0u8; len.min(seg.len() - status::ARG)];
            seg.read(status::ARG, &mut arg);
            // Once every handle is open, the parent may drop its copies.
            run(&arg, &|| status::set_opened(&seg))
        }
    };
    report(&name, &seg, outcome)
}

fn fail_early(name: &str, msg: &str) -> i32 {
    eprintln!("shmproc: process {name}: {msg}");
    Outcome::EXIT_STARTUP
}

/// Records the outcome for the parent, prints failures on stderr (like
/// Python's traceback), and returns the exit code.
pub(super) fn report(name: &str, seg: &RawSegment, outcome: Outcome) -> i32 {
    match &outcome {
        Outcome::Failed(m) => eprintln!("shmproc: process {name} failed: {m}"),
        Outcome::Startup(m) => eprintln!("shmproc: process {name} could not start: {m}"),
        // The panic hook already printed the panic.
        Outcome::Ok | Outcome::Panicked(_) => {}
    }
    log::debug!(target: LOG_TARGET, "process {name} exiting with code {}", outcome.exit_code());
    status::write_outcome(seg, &outcome);
    outcome.exit_code()
}

/// Makes a panic in a child process name it first, as Python prints
/// `Process Process-1:` before a child's traceback (the entry of a spawned
/// child runs before `main`, so its thread is `<unnamed>`; a forked child's
/// thread has the forking thread's name). Installed once per process,
/// chaining the hook in place: in a spawned child before its entry runs;
/// for forked children in the parent before its first fork (a forked child
/// must not take std's hook lock: another parent thread may have held it
/// at the fork), where it adds nothing while the process is not a child.
pub(super) fn name_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(name) = super::identity::child_name_nonblocking() {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "Process {name}:");
            }
            prev(info);
        }));
    });
}

/// Names two events, `"<at>,<go>"`: a daemon child started with this
/// variable in its environment sets `at` between the two steps of setting
/// up its parent watch, then waits (at most 60 s) for `go` (crash tests:
/// the parent dies right there). Feature `test-hooks` only.
#[cfg(feature = "test-hooks")]
pub const PAUSE_IN_WATCH_PARENT: &str = "SHMPROC_TEST_PAUSE_IN_WATCH_PARENT";

#[cfg(feature = "test-hooks")]
fn pause_in_watch_parent() {
    let Some(names) = std::env::var_os(PAUSE_IN_WATCH_PARENT) else { return };
    let names = names.to_string_lossy();
    if let Some((at, go)) = names.split_once(',')
        && let (Ok(at), Ok(go)) = (crate::Event::open(at), crate::Event::open(go))
    {
        at.set();
        go.wait_timeout(std::time::Duration::from_secs(60));
    }
}

/// A daemon child terminates itself when its parent goes away.
///
/// The pidfd is opened before the parent is checked: if the parent is
/// still ours after the open, the pidfd is the parent's (a pid is not
/// reused while it is our parent). Checking first left a window: a parent
/// that died and was reaped between the check and the open made the open
/// fail (or name another process), and the daemon ran on unwatched.
pub(super) fn watch_parent(parent_pid: u32) {
    signal_self_when_parent_ends(parent_pid, sysproc::SIGTERM, "shmproc-parent-watch");
}

/// Sends `signal` to this process when its parent `parent_pid` ends (at
/// once if it is already gone), from a watch thread named `thread`: the
/// daemon watch (SIGTERM) and the pool workers' (SIGKILL). See
/// [`watch_parent`] for why the pidfd is opened first.
pub(crate) fn signal_self_when_parent_ends(parent_pid: u32, signal: i32, thread: &str) {
    let terminate = move || {
        let _ = sysproc::signal(std::process::id(), signal);
    };
    let fd = sysproc::pidfd_open(parent_pid);
    #[cfg(feature = "test-hooks")]
    pause_in_watch_parent();
    if sysproc::parent_pid() != parent_pid {
        // The parent died before we got here.
        terminate();
        return;
    }
    let watch = move || match fd {
        Ok(fd) => {
            if sysproc::pidfd_wait(&fd, None) {
                terminate();
            }
        }
        // No pidfd (a kernel before 5.3): look at the parent now and then.
        Err(_) => loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if sysproc::parent_pid() != parent_pid {
                return terminate();
            }
        },
    };
    let _ = std::thread::Builder::new().name(thread.into()).spawn(watch);
}
