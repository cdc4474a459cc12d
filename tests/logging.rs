//! Lifecycle logging through the `log` facade (issue 10, like Python's
//! `log_to_stderr()` / `get_logger()`).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};
use shmproc::{Event, Process, Value};

static RECORDS: Mutex<Vec<(Level, String, String)>> = Mutex::new(Vec::new());

/// Keeps every record.
struct Capture;

impl Log for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &Record<'_>) {
        let rec = (r.level(), r.target().to_owned(), r.args().to_string());
        RECORDS.lock().unwrap().push(rec);
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

shmproc::entry! {
    fn sleep_long(started: Event) {
        started.set();
        std::thread::sleep(Duration::from_secs(60));
    }
}

shmproc::entry! {
    fn read_value(v: Value<u32>) -> Result<(), String> {
        v.get().map(drop).map_err(|e| e.to_string())
    }
}

fn has(records: &[(Level, String, String)], level: Level, text: &str) -> bool {
    records.iter().any(|(l, t, m)| *l == level && t == shmproc::process::LOG_TARGET && m.contains(text))
}

#[test]
fn start_signal_and_exit_reach_the_installed_logger() {
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(LevelFilter::Debug);
    // An installed logger is kept: log_to_stderr only sets the level.
    shmproc::process::log_to_stderr(LevelFilter::Debug)
        .log(&Record::builder().level(Level::Warn).target("probe").args(format_args!("through get_logger")).build());
    assert!(RECORDS.lock().unwrap().iter().any(|(_, t, m)| t == "probe" && m == "through get_logger"));

    let started = Event::new().unwrap();
    let mut p = Process::new(sleep_long, started.clone()).with_daemon(true);
    p.start().unwrap();
    assert!(started.wait_timeout(Duration::from_secs(30)), "child did not start");
    p.terminate().unwrap();
    assert!(common::join(&p).is_err());
    let mut q = Process::new(read_value, Value::new(1u32).unwrap());
    q.start().unwrap();
    common::join(&q).unwrap();

    let recs = RECORDS.lock().unwrap().clone();
    let (pid, qpid) = (p.pid().unwrap(), q.pid().unwrap());
    let (pn, qn) = (p.name(), q.name());
    assert!(has(&recs, Level::Info, &format!("process {pn} started (pid {pid}, spawn)")), "{recs:#?}");
    assert!(has(&recs, Level::Info, &format!("sending signal 15 to process {pn} (pid {pid})")), "{recs:#?}");
    assert!(has(&recs, Level::Info, &format!("process {pn} (pid {pid}) was killed by signal 15")), "{recs:#?}");
    assert!(has(&recs, Level::Info, &format!("process {qn} (pid {qpid}) exited with code 0")), "{recs:#?}");
    assert!(has(&recs, Level::Debug, &format!("process {qn}: argument opened by the child")), "{recs:#?}");
}

const INNER: &str = "SHMPROC_LOGGING_TEST_INNER";

/// Runs only when re-executed by the test below (a process of its own: a
/// process has one logger).
#[test]
fn inner_log_to_stderr_run() {
    if std::env::var_os(INNER).is_none() {
        return;
    }
    shmproc::process::log_to_stderr(LevelFilter::Debug);
    let mut p = Process::new(read_value, Value::new(5u32).unwrap());
    p.start().unwrap();
    common::join(&p).unwrap();
}

#[test]
fn log_to_stderr_logs_parent_and_spawned_child_in_pythons_format() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "inner_log_to_stderr_run", "--test-threads=1"])
        .env(INNER, "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("inner run still going after 60 s (killed)");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let err = reader.join().unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("[INFO/MainProcess] process Process-1 started (pid "), "{err}");
    assert!(err.contains("[DEBUG/Process-1] opened Value "), "the child logs the handles it opens: {err}");
    assert!(err.contains("[INFO/MainProcess] process Process-1 (pid "), "{err}");
    assert!(err.contains(") exited with code 0"), "{err}");
}
