//! Process control: fork, wait, signals, pidfd, parent-death handling.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Ended, but its status was collected by someone else (`ECHILD`: a
    /// `waitpid(-1)` elsewhere in the process, or SIGCHLD ignored).
    Lost,
}

/// `fork()`. Returns 0 in the child, the child's pid in the parent.
///
/// # Safety
/// In a multi-threaded parent the child may only rely on what fork
/// preserves (see the `Fork` start method's caveats).
pub(crate) unsafe fn fork() -> std::io::Result<u32> {
    // SAFETY: the caller accepts fork's rules for the child.
    let r = unsafe { libc::fork() };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r as u32) }
}

fn decode_status(status: libc::c_int) -> Option<Ended> {
    if libc::WIFEXITED(status) {
        Some(Ended::Code(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(Ended::Signal(libc::WTERMSIG(status)))
    } else {
        None
    }
}

/// Reaps `pid` if it has ended (`block = false`) or waits until it ends.
/// `Ok(None)`: still running. EINTR is retried.
pub(crate) fn wait_pid(pid: u32, block: bool) -> std::io::Result<Option<Ended>> {
    loop {
        let mut status = 0;
        let flags = if block { 0 } else { libc::WNOHANG };
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
        if r == 0 {
            return Ok(None);
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if let Some(end) = decode_status(status) {
            return Ok(Some(end));
        }
        // Stopped/continued notifications are not ends: keep going.
        if !block {
            return Ok(None);
        }
    }
}

/// The termination request (`terminate`, daemon children at exit).
pub(crate) const SIGTERM: i32 = libc::SIGTERM;
/// The kill that cannot be caught.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;
/// Signals a process raises on itself when it crashes (`abort`, a panic
/// under `panic = "abort"`, a bad access, a stack overflow, a trap), not
/// ones others send to stop it.
pub(crate) const CRASH_SIGNALS: [i32; 7] =
    [libc::SIGABRT, libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGSYS, libc::SIGTRAP];
/// "No such process": a signal to a process already reaped.
pub(crate) const ESRCH: i32 = libc::ESRCH;

/// Sends `sig` to the process behind `fd` (`pidfd_send_signal`, Linux >=
/// 5.1): unlike `kill(pid)`, it can never hit a process that reused the
/// pid after ours was reaped (that gives `ESRCH`).
pub(crate) fn pidfd_signal(fd: &OwnedFd, sig: i32) -> std::io::Result<()> {
    // SAFETY: plain syscall on an fd we own; a null siginfo is allowed.
    let r = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Sends `sig` to `pid`. Only for our own pid or a child that is not yet
/// reaped (its pid cannot be reused until then).
pub(crate) fn signal(pid: u32, sig: i32) -> std::io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// A pidfd for `pid` (Linux >= 5.3).
pub(crate) fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new fd we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `r` is a fresh fd returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Waits until the process behind `fd` exits or `deadline` passes; true if
/// it exited. `None` waits forever.
pub(crate) fn pidfd_wait(fd: &OwnedFd, deadline: Option<Instant>) -> bool {
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                // Rounded up to whole milliseconds, at most i32::MAX (the
                // loop sleeps again if that was not enough).
                let left = d.saturating_duration_since(Instant::now());
                let ms = left.as_millis() + u128::from(left.subsec_nanos() % 1_000_000 != 0);
                i32::try_from(ms).unwrap_or(i32::MAX)
            }
        };
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            return true;
        }
        if r == 0 {
            if deadline.is_some_and(|d| Instant::now() < d) {
                continue;
            }
            return false;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

/// Ignores SIGPIPE, as std's runtime does before `main` in every Rust
/// program (a write into a closed pipe is then an `EPIPE` error).
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Ends the calling process at once: no atexit handlers, no destructors.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// The parent's pid.
pub(crate) fn parent_pid() -> u32 {
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() as u32 }
}

/// Number of online CPUs.
pub(crate) fn cpu_count() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 { n as usize } else { 1 }
}

/// Registers `f` to run at normal process exit (after `main` returns or
/// `std::process::exit`).
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain function with the C ABI and no arguments.
    unsafe { libc::atexit(f) };
}
