//! Lifecycle logging, like Python's `multiprocessing.log_to_stderr()` and
//! `get_logger()`, through the [`log`] facade.
//!
//! Records (target [`LOG_TARGET`]): a child started (info), how it ended
//! (info), a signal sent to it (info), the handles a child opened from its
//! argument (debug, in the child), children terminated or joined at exit
//! (debug). Nothing is printed unless a logger is installed: your own
//! (`env_logger`, ...), or the minimal stderr one of [`log_to_stderr`].

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{LevelFilter, Log, Metadata, Record};

/// The `log` target of every record this crate emits.
pub const LOG_TARGET: &str = "shmproc";

/// Writes `[LEVEL/ProcessName] message` lines to stderr, Python's format.
struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            // Computed before taking stderr's lock (see `Process::fork`).
            let line = format!("[{}/{}] {}\n", record.level(), super::current_process().name, record.args());
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

static STDERR_LOGGER: StderrLogger = StderrLogger;
/// Our stderr logger is the installed one: spawned children use it too.
static OURS: AtomicBool = AtomicBool::new(false);

/// Logs this crate's process lifecycle to stderr at `level` and above,
/// like Python's `log_to_stderr(level)`: installs a minimal stderr logger
/// if no logger is installed yet (an installed one is kept), sets `log`'s
/// maximum level, and returns the logger. Children started afterwards with
/// [`Spawn`](super::StartMethod::Spawn) log to stderr at the same level.
///
/// ```
/// use log::LevelFilter;
/// let logger = shmproc::process::log_to_stderr(LevelFilter::Info);
/// assert!(logger.enabled(&log::Metadata::builder().level(log::Level::Info).target("shmproc").build()));
/// ```
pub fn log_to_stderr(level: LevelFilter) -> &'static dyn Log {
    if log::set_logger(&STDERR_LOGGER).is_ok() {
        OURS.store(true, Ordering::Relaxed);
    }
    log::set_max_level(level);
    log::logger()
}

/// The logger this crate's records go to (Python's `get_logger()`): the
/// one installed with `log::set_logger` or [`log_to_stderr`], or `log`'s
/// no-op logger.
///
/// ```
/// let logger = shmproc::process::get_logger();
/// logger.flush();
/// ```
pub fn get_logger() -> &'static dyn Log {
    log::logger()
}

/// The level spawned children should log at, if ours is the logger.
pub(super) fn child_level() -> Option<LevelFilter> {
    OURS.load(Ordering::Relaxed).then(log::max_level)
}
