//! `shmproc::wait`: defects a hostile review found (each test failed on the
//! code before its fix; the doc comments describe the old failure). Every
//! test is bounded by a deadline.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shmproc::{Event, Process, Queue, wait};

shmproc::entry! {
    fn rev_block_until(stop: Event) {
        stop.wait_timeout(common::DEADLINE);
    }
}

/// `Process as Waitable::ready` is a `try_lock` of the child's `ended`
/// mutex, reading "not ended" when the lock is busy. If the lock is held
/// by anyone but the watcher thread (here: another thread calling
/// `is_alive()` on a handle from `active_children()`, as a monitor would),
/// `wait` can read the already-bumped DEATHS word in `announce`, find the
/// lock busy again in the re-check, and sleep on DEATHS == that value:
/// nothing will ever bump it again, so it sleeps to its timeout (forever
/// with `None`) although the child is dead.
#[test]
fn a_death_is_seen_while_other_threads_poll_the_same_child() {
    const TRIES: usize = 60;
    const TIMEOUT: Duration = Duration::from_secs(2);
    let me = common::gettid();
    let mut missed = Vec::new();
    for i in 0..TRIES {
        let stop = Event::new().unwrap();
        let mut p = Process::new(rev_block_until, stop.clone());
        p.start().unwrap();
        let pid = p.pid().unwrap();
        let other = shmproc::active_children().into_iter().find(|c| c.pid() == Some(pid)).unwrap();
        let done = AtomicBool::new(false);
        let (r, took) = std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    while !done.load(Ordering::Relaxed) {
                        let _ = other.is_alive();
                    }
                });
            }
            let st = stop.clone();
            s.spawn(move || {
                common::wait_for("the waiter to sleep in futex_waitv", || {
                    common::blocked_in(std::process::id(), me) == Some(449)
                });
                st.set();
            });
            let t0 = Instant::now();
            let r = wait(&mut [&mut p], Some(TIMEOUT)).unwrap();
            let took = t0.elapsed();
            done.store(true, Ordering::Relaxed);
            (r, took)
        });
        if r.is_empty() {
            assert!(!other.is_alive());
            missed.push((i, took, p.exitcode()));
        }
        let _ = common::join(&p);
    }
    eprintln!("missed deaths (try, waited, exitcode): {missed:?}");
    assert!(
        missed.is_empty(),
        "{} of {TRIES} waits slept to their timeout beside a dead child: {missed:?}",
        missed.len()
    );
}

shmproc::entry! {
    fn rev_exit_at_once() {}
}

/// The state letter of `/proc/<pid>/stat` ('Z': ended, not reaped).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()
}

/// A child that has ended (a zombie nobody reaped yet) is not ready for a
/// poll (`timeout` zero): `ready(false)` only looks at an end recorded by
/// somebody, and the watcher thread that would record it is only started
/// in `sleep_loop`'s `prepare`, after which a passed deadline returns the
/// empty set. Python's `wait([p.sentinel], 0)` reports it; so do
/// `p.is_alive()` / `p.exitcode()` here.
#[test]
fn a_poll_sees_a_child_that_already_ended() {
    let mut p = Process::new(rev_exit_at_once, ());
    p.start().unwrap();
    let pid = p.pid().unwrap();
    // A zombie, or already reaped by another test's `active_children()`.
    common::wait_for("the child to end", || matches!(proc_state(pid), Some('Z') | None));
    let r = wait(&mut [&mut p], Some(Duration::ZERO)).unwrap();
    let first: Vec<usize> = r.iter().collect();
    eprintln!("wait(timeout 0) on an ended child: {first:?}; exitcode() then: {:?}", p.exitcode());
    assert_eq!(first, [0], "the child had ended");
}

shmproc::entry! {
    fn rev_hold_pipe(args: (shmproc::Connection, Event)) -> Result<(), String> {
        let (mut conn, stop) = args;
        conn.send_bytes(b"hi").map_err(|e| e.to_string())?;
        stop.wait_timeout(common::DEADLINE);
        Ok(())
    }
}

/// A pipe end whose sender was SIGKILLed (and reaped): `try_recv_bytes`
/// says `Disconnected` at once, but `wait` with timeout 0 says "not ready",
/// and `wait` with a timeout returns only after its first periodic
/// `thorough` check (100 ms later): `ready(false)` never looks at the
/// liveness the receive calls look at.
#[test]
fn a_pipe_whose_sender_died_is_ready_for_a_poll() {
    let (mut mine, theirs) = shmproc::pipe(true).unwrap();
    let stop = Event::new().unwrap();
    let p = Process::new(rev_hold_pipe, (theirs, stop.clone()));
    let mut p = p;
    p.start().unwrap();
    assert_eq!(mine.recv_bytes().unwrap(), b"hi");
    p.kill().unwrap();
    let _ = common::join(&p);
    let poll: Vec<usize> = wait(&mut [&mut mine], Some(Duration::ZERO)).unwrap().iter().collect();
    let t0 = Instant::now();
    let blocking: Vec<usize> = wait(&mut [&mut mine], Some(common::DEADLINE)).unwrap().iter().collect();
    let took = t0.elapsed();
    let recv = mine.try_recv_bytes();
    eprintln!("poll: {poll:?}; blocking wait: {blocking:?} after {took:?}; try_recv_bytes: {recv:?}");
    assert_eq!(poll, [0], "try_recv_bytes would fail at once ({recv:?})");
}

/// A logger whose `log` needs 128 KiB of stack (a debug-build formatter
/// with a large buffer on the stack, say).
struct BigStackLogger;
impl log::Log for BigStackLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        let buf = std::hint::black_box([0u8; 128 << 10]);
        let _ = std::hint::black_box((
            buf[r.line().unwrap_or(0) as usize % 1024],
            std::thread::current().name().map(str::len),
        ));
    }
    fn flush(&self) {}
}

/// The watcher thread (64 KiB stack) records the child's end with
/// `Inner::poll`, which calls the application's logger (`log::info!`
/// "process ... exited") and drops the parent's copy of the argument on
/// that thread. Every other thread in the program (std's default: 2 MiB)
/// can run that logger; the watcher overflows its stack and the whole
/// parent process aborts. Run in a child test binary (it aborts).
#[test]
fn the_watcher_thread_runs_the_applications_logger_with_a_normal_stack() {
    if std::env::var_os("REV_WAIT_LOGGER").is_some() {
        log::set_logger(&BigStackLogger).unwrap();
        log::set_max_level(log::LevelFilter::Info);
        let stop = Event::new().unwrap();
        let mut p = Process::new(rev_block_until, stop.clone());
        p.start().unwrap();
        let st = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            st.set();
        });
        let r = wait(&mut [&mut p], Some(Duration::from_secs(10))).unwrap();
        t.join().unwrap();
        assert_eq!(r.iter().collect::<Vec<_>>(), [0]);
        return;
    }
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "--test-threads=1", "the_watcher_thread_runs_the_applications_logger_with_a_normal_stack"])
        .env("REV_WAIT_LOGGER", "1");
    let (status, stderr) = common::run_within(&mut cmd);
    let tail: String =
        stderr.lines().filter(|l| l.contains("overflow") || l.contains("shmproc")).collect::<Vec<_>>().join("\n");
    eprintln!("child: {status:?}\n{tail}");
    assert!(status.success(), "the waiting process died: {status:?}\n{tail}");
}

/// CPU time (user + system, in clock ticks) of thread `tid` of this
/// process, from `/proc/self/task/<tid>/stat`.
fn thread_ticks(tid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

shmproc::entry! {
    fn rev_put_on_command(args: (Queue<u64>, shmproc::Semaphore, u64)) -> Result<(), String> {
        let (q, go, item) = args;
        if !go.acquire_timeout(common::DEADLINE) {
            return Err("never told to put".into());
        }
        q.put_timeout(item, common::DEADLINE).map_err(|e| e.to_string())
    }
}

/// An unbounded queue whose newest ring is sealed with no successor (a
/// producer died mid-link) and whose successor's name is taken by a file
/// that is not a ring (a crashed creator's leftover, or a hostile peer):
/// the chain cannot go on. `wait` used to "make progress" in `announce`
/// every time (a failed link, a `yield`) and never sleep: it burned a
/// core to its timeout (forever with `None`). Now it sleeps on the
/// chain's space word (a poll period at most), using no CPU (its thread's
/// ticks in /proc), and a put from another process, once the name is
/// free again, links the successor and wakes it.
#[test]
fn wait_on_an_unbounded_queue_with_a_bad_successor_sleeps() {
    let name = format!("rev-wait-spin-{}", std::process::id());
    let mut uq = Queue::<u64>::create(&name, 0).unwrap();
    let path = format!("/dev/shm/{}{}", shmproc::NAME_PREFIX, uq.__ring_name(1).unwrap());
    uq.__seal_newest();
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
        std::io::Write::write_all(&mut f, &[0xA5u8; 4096]).unwrap();
    }
    let go = shmproc::Semaphore::new(0).unwrap();
    let mut p = Process::new(rev_put_on_command, (uq.clone(), go.clone(), 7));
    p.start().unwrap();
    let me = common::gettid();

    // Nothing to read: the wait times out, asleep the whole time.
    let ticks = thread_ticks(me);
    let t0 = Instant::now();
    let r = wait(&mut [&mut uq], Some(Duration::from_millis(800))).unwrap();
    let (cpu, wall) = (thread_ticks(me) - ticks, t0.elapsed());
    eprintln!("wait returned {r:?} after {wall:?}, using {cpu} ticks of CPU");
    assert!(r.is_empty());
    if cpu > 10 {
        let _ = std::fs::remove_file(&path);
        let _ = p.kill();
        let _ = common::join(&p);
        panic!("the waiting thread spun: {cpu} ticks of CPU in {wall:?}");
    }

    // The name freed, a put in the child links ring 1 and wakes the wait.
    let waker = std::thread::spawn(move || {
        common::wait_for("the waiter to sleep in futex_waitv", || {
            common::blocked_in(std::process::id(), me) == Some(449)
        });
        std::fs::remove_file(&path).unwrap();
        go.release().unwrap();
    });
    let r = wait(&mut [&mut uq], Some(common::DEADLINE)).unwrap();
    waker.join().unwrap();
    assert_eq!(r.iter().collect::<Vec<_>>(), [0]);
    assert_eq!(uq.get_nowait(), Ok(7));
    common::join(&p).unwrap();
    assert_eq!(p.exitcode(), Some(0));
}
