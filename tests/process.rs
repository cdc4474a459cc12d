//! Process tests with real children, under the standard libtest harness
//! (so they also show that Spawn works inside `cargo test`, from a
//! multi-threaded parent).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use shmproc::process::{Entry, Handoff, HandoffError, Run, StartMethod};
use shmproc::{
    Array, Barrier, BoundedSemaphore, Condition, Event, Lock, Mutex, Process, ProcessError, RLock, Semaphore, Value,
};

fn name(test: &str) -> String {
    format!("ptest-{test}-{}", std::process::id())
}

/// Writes `s` into a byte array (for children to report strings).
fn put_str(a: &Array<u8>, s: &str) {
    let mut g = a.get_lock().unwrap();
    let n = g.write(0, s.as_bytes());
    for i in n..g.len() {
        g.set(i, 0);
    }
}

fn get_str(a: &Array<u8>) -> String {
    let v = a.to_vec().unwrap();
    String::from_utf8_lossy(&v[..v.iter().position(|&b| b == 0).unwrap_or(v.len())]).into_owned()
}

fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

shmproc::entry! { fn succeed() {} }

shmproc::entry! {
    fn fail(msg: String) -> Result<(), String> {
        Err(msg)
    }
}

shmproc::entry! {
    fn explode(msg: String) {
        panic!("{msg}");
    }
}

shmproc::entry! {
    fn sleep_long(started: Event) {
        started.set();
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn both_methods(f: impl Fn(StartMethod)) {
    f(StartMethod::Spawn);
    f(StartMethod::Fork);
}

#[test]
fn successful_entry_exits_with_zero() {
    both_methods(|m| {
        let mut p = Process::new(succeed, ()).with_start_method(m);
        assert_eq!(p.exitcode(), None);
        p.start().unwrap();
        assert!(p.pid().is_some());
        common::join(&p).unwrap();
        assert_eq!(p.exitcode(), Some(0), "{m:?}");
        assert!(!p.is_alive());
    });
}

/// Two entries named `hello` in one module, each inside its own function:
/// each child runs its own body (their ids once were both
/// `process::hello`, and the second started the first).
fn start_a(m: StartMethod) -> Process {
    shmproc::entry! { fn hello(n: u32) -> Result<(), String> { Err(format!("a {n}")) } }
    let mut p = Process::new(hello, 1).with_start_method(m);
    p.start().unwrap();
    p
}

fn start_b(m: StartMethod) -> Process {
    shmproc::entry! { fn hello(s: String) -> Result<(), String> { Err(format!("b {s}")) } }
    let mut p = Process::new(hello, "two".to_string()).with_start_method(m);
    p.start().unwrap();
    p
}

#[test]
fn entries_of_the_same_name_in_different_functions_each_run_their_own_body() {
    both_methods(|m| {
        for (p, want) in [(start_b(m), "b two"), (start_a(m), "a 1")] {
            match common::join(&p) {
                Err(ProcessError::Failed { message, .. }) => assert_eq!(message, want, "{m:?}"),
                other => panic!("{m:?}: {other:?}"),
            }
        }
    });
}

#[test]
fn returned_error_gives_exit_code_1_and_its_message() {
    both_methods(|m| {
        let mut p = Process::new(fail, "disk on fire".to_string()).with_start_method(m);
        p.start().unwrap();
        match common::join(&p) {
            Err(ProcessError::Failed { message, .. }) => assert_eq!(message, "disk on fire"),
            other => panic!("{m:?}: {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(1));
    });
}

#[test]
fn panic_message_reaches_the_parent() {
    both_methods(|m| {
        let mut p = Process::new(explode, "kaboom 42".to_string()).with_start_method(m);
        p.start().unwrap();
        match common::join(&p) {
            Err(ProcessError::Panicked { message, .. }) => assert_eq!(message, "kaboom 42"),
            other => panic!("{m:?}: {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(101));
    });
}

fn start_sleeper(test: &str, m: StartMethod) -> (Process, Event) {
    let started = Event::create(&name(&format!("{test}-{m:?}"))).unwrap();
    // Daemon: a failed assertion must not leave the test binary's exit
    // waiting for a 60 s sleeper.
    let mut p = Process::new(sleep_long, started.clone()).with_start_method(m).with_daemon(true);
    p.start().unwrap();
    assert!(started.wait_timeout(Duration::from_secs(30)), "child did not start");
    (p, started)
}

#[test]
fn terminate_gives_minus_15_and_kill_minus_9() {
    both_methods(|m| {
        let (p, _ev) = start_sleeper("terminate", m);
        p.terminate().unwrap();
        assert!(matches!(common::join(&p), Err(ProcessError::Signaled { signal: 15, .. })));
        assert_eq!(p.exitcode(), Some(-15));

        let (p, _ev) = start_sleeper("kill", m);
        p.kill().unwrap();
        assert!(matches!(common::join(&p), Err(ProcessError::Signaled { signal: 9, .. })));
        assert_eq!(p.exitcode(), Some(-9));
    });
}

#[test]
fn join_timeout_leaves_a_live_child_running() {
    let (mut p, _ev) = start_sleeper("join-timeout", StartMethod::Spawn);
    assert!(!p.join_timeout(Duration::from_millis(50)).unwrap());
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    assert!(matches!(p.close(), Err(ProcessError::StillRunning(_))));
    assert!(p.is_alive(), "a refused close changed nothing");
    p.kill().unwrap();
    assert!(matches!(common::join(&p), Err(ProcessError::Signaled { signal: 9, .. })));
    p.close().unwrap();
    assert!(matches!(p.join(), Err(ProcessError::Closed(_))), "closed: join returns at once");
}

shmproc::entry! {
    fn report_identity(out: (Array<u8>, Array<u8>, Value<[u32; 2]>)) {
        let (me, parent, pids) = out;
        let info = shmproc::current_process();
        put_str(&me, &info.name);
        let p = shmproc::parent_process().expect("a child has a parent");
        put_str(&parent, &p.name);
        pids.set([info.pid, p.pid]).unwrap();
    }
}

#[test]
fn names_are_counted_at_creation_and_seen_by_the_child() {
    let a = Process::new(succeed, ());
    let b = Process::new(succeed, ());
    let na: u32 = a.name().strip_prefix("Process-").unwrap().parse().unwrap();
    let nb: u32 = b.name().strip_prefix("Process-").unwrap().parse().unwrap();
    assert!(nb > na, "{} then {}", a.name(), b.name());
    assert_eq!(shmproc::current_process().name, "MainProcess");

    both_methods(|m| {
        let me = Array::<u8>::new(64).unwrap();
        let parent = Array::<u8>::new(64).unwrap();
        let pids = Value::new([0u32; 2]).unwrap();
        let mut p = Process::new(report_identity, (me.clone(), parent.clone(), pids.clone()))
            .with_name("Test")
            .with_start_method(m);
        p.start().unwrap();
        common::join(&p).unwrap();
        assert_eq!(get_str(&me), "Test");
        assert_eq!(get_str(&parent), "MainProcess");
        assert_eq!(pids.get().unwrap(), [p.pid().unwrap(), std::process::id()]);
    });
}

#[test]
fn active_children_lists_running_children_until_joined() {
    let (p, _ev) = start_sleeper("active", StartMethod::Spawn);
    let pid = p.pid().unwrap();
    assert!(shmproc::active_children().iter().any(|c| c.pid() == Some(pid)));
    p.kill().unwrap();
    let _ = common::join(&p);
    assert!(!shmproc::active_children().iter().any(|c| c.pid() == Some(pid)));
}

#[test]
fn active_children_can_be_terminated_and_joined_with_their_identities() {
    let (p, _ev) = start_sleeper("active-terminate", StartMethod::Spawn);
    let pid = p.pid().unwrap();
    let found: Vec<Process> = shmproc::active_children().into_iter().filter(|c| c.pid() == Some(pid)).collect();
    assert_eq!(found.len(), 1);
    let c = &found[0];
    assert_eq!(c.name(), p.name());
    assert_eq!(c.ident(), Some(pid));
    assert_eq!(c.identity(), p.identity());
    assert!(c.daemon());
    // What Python programs do with active_children(): terminate and join.
    c.terminate().unwrap();
    assert!(matches!(common::join(c), Err(ProcessError::Signaled { signal: 15, .. })));
    assert_eq!(c.exitcode(), Some(-15));
    assert_eq!(p.exitcode(), Some(-15), "the original handle sees the same end");
    assert!(!shmproc::active_children().iter().any(|c| c.pid() == Some(pid)));
}

shmproc::entry! {
    fn expect_seven(v: Value<u64>) -> Result<(), String> {
        match v.get() {
            Ok(7) => Ok(()),
            other => Err(format!("got {other:?}")),
        }
    }
}

/// Issue 9 item 10: the parent's only handle goes into the argument; before
/// the fix `start` dropped it, the name was unlinked, and a spawned child
/// failed with "not found".
#[test]
fn an_object_created_just_for_the_child_is_there_when_the_child_opens_it() {
    both_methods(|m| {
        for _ in 0..3 {
            let mut p = Process::new(expect_seven, Value::new(7u64).unwrap()).with_start_method(m);
            p.start().unwrap();
            common::join(&p).unwrap_or_else(|e| panic!("{m:?}: {e}"));
        }
    });
}

shmproc::entry! {
    fn lock_and_record(args: (Lock, Value<u32>)) {
        let (lock, out) = args;
        drop(lock.lock().unwrap());
        out.set(1).unwrap();
    }
}

shmproc::entry! {
    /// Starts a child with a lock made just for it and returns at once:
    /// no join, and its own handles are gone (legal in Python).
    fn start_and_return(args: (Value<u32>, bool)) {
        let (out, fork) = args;
        let method = if fork { StartMethod::Fork } else { StartMethod::Spawn };
        let mut g = Process::new(lock_and_record, (Lock::new().unwrap(), out)).with_start_method(method);
        g.start().unwrap();
    }
}

/// Issue 9 item 10: a parent whose main ends right after `start` (no join):
/// before the fix its Lock was unlinked before the grandchild opened it.
#[test]
fn a_parent_that_returns_right_after_start_keeps_the_argument_for_its_child() {
    for (m, fork_grandchild) in [(StartMethod::Spawn, false), (StartMethod::Spawn, true), (StartMethod::Fork, false)] {
        let out = Value::new(0u32).unwrap();
        let mut p = Process::new(start_and_return, (out.clone(), fork_grandchild)).with_start_method(m);
        p.start().unwrap();
        common::join(&p).unwrap();
        // The intermediate's exit joined its child: the work is done.
        assert_eq!(out.get().unwrap(), 1, "{m:?} / fork grandchild {fork_grandchild}: the grandchild failed");
    }
}

/// Issue 9 item 12: a child reaped behind our back (a `waitpid` elsewhere)
/// is not reported as exit code -1 (SIGHUP by our convention), and
/// signalling it is a clear error, not a start error or a stray signal.
#[test]
fn a_child_reaped_elsewhere_is_not_exit_code_minus_1_and_cannot_be_signalled() {
    let (p, _ev) = start_sleeper("reaped-elsewhere", StartMethod::Spawn);
    let pid = p.pid().unwrap() as libc::pid_t;
    // SAFETY: kill of our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    reap_elsewhere(pid);
    match p.terminate() {
        Err(ProcessError::Signal { signal: 15, source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::ESRCH)),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.exitcode(), Some(shmproc::process::EXITCODE_UNKNOWN));
    assert!(!p.is_alive());
    assert!(matches!(common::join(&p), Err(ProcessError::StatusUnavailable { .. })));
    // A child that reported its outcome keeps its code even then.
    let mut q = Process::new(succeed, ());
    q.start().unwrap();
    reap_elsewhere(q.pid().unwrap() as libc::pid_t);
    assert_eq!(q.exitcode(), Some(0));
    common::join(&q).unwrap();
}

/// `waitpid(pid)` behind shmproc's back, bounded: a watchdog kills the
/// child if it has not ended within the common deadline, and the test fails.
fn reap_elsewhere(pid: libc::pid_t) {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let expired = done_rx.recv_timeout(common::DEADLINE).is_err();
        if expired {
            // SAFETY: kill of our own child, which the waitpid below has not reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        expired
    });
    let mut status = 0;
    // SAFETY: waitpid on our own child; `status` is a valid out-pointer.
    let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
    done_tx.send(()).unwrap();
    assert!(!watchdog.join().unwrap(), "child {pid} did not end within {:?}; killed it", common::DEADLINE);
    assert_eq!(reaped, pid);
}

#[test]
fn all_start_methods_are_listed_default_first() {
    assert_eq!(shmproc::process::get_all_start_methods(), &[StartMethod::Spawn, StartMethod::Fork]);
    assert_eq!(shmproc::process::get_all_start_methods()[0], shmproc::process::get_start_method());
}

type SyncArgs = (
    (Lock, RLock, Semaphore, BoundedSemaphore),
    (Event, Condition, Barrier),
    (Value<u64>, Array<u32>, Mutex<[u16; 2]>),
);

shmproc::entry! {
    fn use_every_handle(args: SyncArgs) -> Result<(), String> {
        let ((lock, rlock, sem, bsem), (event, cond, barrier), (value, array, mutex)) = args;
        drop(lock.try_lock().map_err(|e| format!("lock: {e}"))?);
        {
            let _a = rlock.lock().map_err(|e| e.to_string())?;
            let _b = rlock.lock().map_err(|e| e.to_string())?;
        }
        if !sem.try_acquire() {
            return Err("semaphore had no unit".into());
        }
        bsem.release().map_err(|e| e.to_string())?;
        value.set(77).map_err(|e| e.to_string())?;
        array.set(2, 5).map_err(|e| e.to_string())?;
        mutex.lock().map_err(|e| e.to_string())?.set_value([3, 4]);
        {
            let g = cond.lock().map_err(|e| e.to_string())?;
            cond.notify_all(&g);
        }
        event.set();
        barrier.wait_timeout(Duration::from_secs(30)).map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[test]
fn handles_of_every_sync_type_work_in_the_child() {
    both_methods(|m| {
        let lock = Lock::new().unwrap();
        let rlock = RLock::new().unwrap();
        let sem = Semaphore::new(1).unwrap();
        let bsem = BoundedSemaphore::new(1).unwrap();
        assert!(bsem.try_acquire());
        let event = Event::new().unwrap();
        let cond = Condition::new().unwrap();
        let barrier = Barrier::new(2).unwrap();
        let value = Value::new(0u64).unwrap();
        let array = Array::<u32>::new(4).unwrap();
        let mutex = Mutex::new([0u16; 2]).unwrap();
        let args = (
            (lock.clone(), rlock.clone(), sem.clone(), bsem.clone()),
            (event.clone(), cond.clone(), barrier.clone()),
            (value.clone(), array.clone(), mutex.clone()),
        );
        let mut p = Process::new(use_every_handle, args).with_start_method(m);
        p.start().unwrap();
        assert_eq!(barrier.wait_timeout(Duration::from_secs(30)).map(|i| i < 2), Ok(true));
        common::join(&p).unwrap();
        assert!(event.is_set());
        assert_eq!(sem.get_value(), 0);
        assert_eq!(bsem.get_value(), 1);
        assert_eq!(value.get().unwrap(), 77);
        assert_eq!(array.to_vec().unwrap(), vec![0, 0, 5, 0]);
        assert_eq!(mutex.lock().unwrap().value(), [3, 4]);
        assert!(!lock.is_locked());
        assert!(rlock.try_lock().is_ok());
    });
}

shmproc::entry! {
    fn check_data(args: (String, Vec<u64>, Option<char>, [i16; 3])) -> Result<(), String> {
        let (s, v, c, a) = args;
        if s == "héllo" && v == [1, 2, 3] && c == Some('λ') && a == [-1, 0, 1] {
            Ok(())
        } else {
            Err(format!("got {s:?} {v:?} {c:?} {a:?}"))
        }
    }
}

#[test]
fn plain_data_arguments_arrive_intact() {
    let mut p = Process::new(check_data, ("héllo".into(), vec![1, 2, 3], Some('λ'), [-1, 0, 1]));
    p.start().unwrap();
    common::join(&p).unwrap();
}

#[test]
fn a_handle_whose_object_is_gone_gives_the_child_a_clear_error() {
    let lock = Lock::create(&name("gone")).unwrap();
    shmproc::unlink(lock.name()).unwrap();
    let mut p = Process::new(use_lock, lock.clone());
    p.start().unwrap();
    match common::join(&p) {
        Err(ProcessError::StartupFailed { message, .. }) => {
            assert!(message.contains("not found") && message.contains(lock.name()), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.exitcode(), Some(2));
}

shmproc::entry! {
    fn use_lock(lock: Lock) {
        drop(lock.lock().unwrap());
    }
}

/// An entry that was never registered (no `entry!`).
struct Unregistered;
impl Entry for Unregistered {
    const ID: &'static str = "tests::Unregistered";
    type Arg = ();
    fn call(_: ()) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn an_unregistered_entry_is_refused_by_start() {
    let mut p = Process::new(Unregistered, ());
    assert!(matches!(p.start(), Err(ProcessError::NotRegistered("tests::Unregistered"))));
}

#[test]
fn a_child_asked_for_an_unknown_entry_id_exits_with_a_clear_error() {
    // What a tampered or mismatched request looks like to the child.
    let seg = shmproc::RawSegment::new(8192).unwrap();
    let (status, err) = common::run_within(
        std::process::Command::new(std::env::current_exe().unwrap())
            .env("SHMPROC_ENTRY", "no::such::entry")
            .env("SHMPROC_SEGMENT", seg.name())
            .env("SHMPROC_NAME", "Process-99"),
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("unknown entry id \"no::such::entry\""), "{err}");
}

#[test]
fn processes_can_be_spawned_from_many_threads_at_once() {
    let total = Value::new(0u64).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..3 {
                    let mut p = Process::new(add_one, total.clone());
                    p.start().unwrap();
                    common::join(&p).unwrap();
                }
            });
        }
    });
    assert_eq!(total.get().unwrap(), 12);
}

shmproc::entry! {
    fn add_one(total: Value<u64>) {
        total.get_lock().unwrap().update(|t| *t += 1);
    }
}

struct Doubler {
    input: u64,
    out: Value<u64>,
}

impl Handoff for Doubler {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.input, self.out.clone()).encode(out)
    }
    fn decode(i: &mut &[u8]) -> Result<Self, HandoffError> {
        let (input, out) = <(u64, Value<u64>)>::decode(i)?;
        Ok(Doubler { input, out })
    }
}

impl Run for Doubler {
    fn run(self) -> Result<(), String> {
        self.out.set(self.input * 2).map_err(|e| e.to_string())
    }
}

shmproc::entry!(impl Run for Doubler);

#[test]
fn a_run_struct_is_a_process_body() {
    both_methods(|m| {
        let out = Value::new(0u64).unwrap();
        let mut p = Process::from_run(Doubler { input: 21, out: out.clone() }).with_start_method(m);
        p.start().unwrap();
        common::join(&p).unwrap();
        assert_eq!(out.get().unwrap(), 42);
    });
}

#[test]
fn start_twice_and_join_before_start_are_errors() {
    let mut p = Process::new(succeed, ());
    assert!(matches!(p.join(), Err(ProcessError::NotStarted(_))), "not started: join returns at once");
    p.start().unwrap();
    assert!(matches!(p.start(), Err(ProcessError::AlreadyStarted(_))));
    common::join(&p).unwrap();
    p.close().unwrap();
}

// --- exit-time behaviour, observed through an intermediate child ----------

shmproc::entry! {
    /// Starts a grandchild (daemon or not) that records its pid, then
    /// either returns normally or waits to be killed.
    fn start_grandchild(args: (bool, Value<u32>, Event, bool)) {
        let (daemon, pid_out, done, wait_to_be_killed) = args;
        let mut g = Process::new(grandchild, done).with_daemon(daemon);
        g.start().unwrap();
        pid_out.set(g.pid().unwrap()).unwrap();
        if wait_to_be_killed {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

shmproc::entry! {
    /// A daemon sleeps until it is terminated. A non-daemon sets `done`
    /// only once its parent waits for it (a thread of the parent blocked in
    /// `waitpid`: the parent's exit joining it); if the parent goes away
    /// without waiting, it returns without setting `done`.
    fn grandchild(done: Event) {
        if shmproc::current_process().daemon {
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        let parent = shmproc::parent_process().expect("a child has a parent").pid;
        let parent_gone = || std::os::unix::process::parent_id() != parent;
        common::wait_for("the parent to wait for this child, or to be gone", || {
            parent_gone() || common::waits_for_a_child(parent)
        });
        if !parent_gone() {
            done.set();
        }
    }
}

#[test]
fn a_normal_exit_joins_non_daemon_children_and_terminates_daemons() {
    for daemon in [false, true] {
        let pid = Value::new(0u32).unwrap();
        let done = Event::new().unwrap();
        let mut p = Process::new(start_grandchild, (daemon, pid.clone(), done.clone(), false));
        p.start().unwrap();
        common::join(&p).unwrap();
        let gpid = pid.get().unwrap();
        assert_ne!(gpid, 0);
        if daemon {
            // Terminated at the intermediate's exit, long before its 60 s.
            common::wait_for("daemon grandchild to be gone", || pid_gone(gpid));
            assert!(!done.is_set());
        } else {
            // The intermediate's exit waited for it: it finished its work.
            assert!(done.is_set(), "non-daemon child was not joined at exit");
        }
    }
}

#[test]
fn a_daemon_child_ends_when_its_parent_is_killed() {
    let pid = Value::new(0u32).unwrap();
    let done = Event::new().unwrap();
    let mut p = Process::new(start_grandchild, (true, pid.clone(), done.clone(), true));
    p.start().unwrap();
    common::wait_for("grandchild pid", || pid.get().unwrap() != 0);
    let gpid = pid.get().unwrap();
    assert!(!pid_gone(gpid));
    p.kill().unwrap();
    let _ = common::join(&p);
    common::wait_for("orphaned daemon to end", || pid_gone(gpid));
}

shmproc::entry! {
    /// Starts a daemon grandchild that pauses between the two steps of
    /// setting up its parent watch (the `test-hooks` pause: it sets `at`,
    /// then waits for `go`), records its pid, then waits to be killed.
    fn start_paused_daemon(args: (Value<u32>, Event, Event, Event, bool)) {
        let (pid_out, done, at, go, fork) = args;
        let method = if fork { StartMethod::Fork } else { StartMethod::Spawn };
        // SAFETY: this child process runs only this entry, on one thread:
        // nothing reads the environment while it is written.
        unsafe { std::env::set_var(shmproc::__PAUSE_IN_WATCH_PARENT, format!("{},{}", at.name(), go.name())) };
        let mut g = Process::new(sleep_past_the_deadline, done).with_daemon(true).with_start_method(method);
        g.start().unwrap();
        pid_out.set(g.pid().unwrap()).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    }
}

shmproc::entry! {
    /// Sleeps well past the tests' deadline (its test kills it).
    fn sleep_past_the_deadline(started: Event) {
        started.set();
        std::thread::sleep(common::DEADLINE * 5);
    }
}

/// Regression: a daemon `Process` checked that its parent was alive, then
/// opened a pidfd on the parent's pid; a parent that died (and was reaped)
/// in between made the open fail, and the daemon ran on unwatched. Here the
/// parent is killed and reaped exactly there: the daemon must still end.
#[test]
fn a_daemon_whose_parent_dies_while_it_sets_up_its_watch_still_ends() {
    both_methods(|m| daemon_whose_parent_dies_during_its_watch_setup(m == StartMethod::Fork));
}

fn daemon_whose_parent_dies_during_its_watch_setup(fork: bool) {
    let pid = Value::new(0u32).unwrap();
    let (done, at, go) = (Event::new().unwrap(), Event::new().unwrap(), Event::new().unwrap());
    // `done` stays open here: the daemon opens it after its parent is gone.
    let mut p = Process::new(start_paused_daemon, (pid.clone(), done.clone(), at.clone(), go.clone(), fork));
    p.start().unwrap();
    let reached = at.wait_timeout(common::DEADLINE);
    common::wait_for("grandchild pid", || pid.get().unwrap() != 0);
    let gpid = pid.get().unwrap();
    // The parent dies and is reaped (its pid is free); then the daemon goes on.
    p.kill().unwrap();
    let _ = common::join(&p);
    go.set();
    let end = std::time::Instant::now() + common::DEADLINE;
    while !pid_gone(gpid) && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let ended = pid_gone(gpid);
    if !ended {
        // SAFETY: kill(2) on the daemon this test made (not reaped by us: its parent's pid is gone, so no reuse by then).
        unsafe { libc::kill(gpid as libc::pid_t, libc::SIGKILL) };
    }
    assert!(reached, "the daemon never reached its parent watch (fork: {fork})");
    assert!(ended, "the daemon ran on unwatched after its parent died during the watch's setup (fork: {fork})");
}

/// Kills the child when dropped: however a test ends, a thread blocked in
/// its `join()` returns.
struct KillOnDrop<'a>(&'a Process);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[test]
fn is_alive_does_not_block_while_another_thread_joins() {
    let (p, _ev) = start_sleeper("join-vs-alive", StartMethod::Spawn);
    let p = &p;
    std::thread::scope(|s| {
        // Dropped when this closure ends (also by a failed assertion),
        // before the scope joins its threads: the joiner's join(), the call
        // under test, is bounded by this kill.
        let _kill = KillOnDrop(p);
        let (tid_tx, tid_rx) = mpsc::channel();
        let joiner = s.spawn(move || {
            tid_tx.send(common::gettid()).unwrap();
            p.join()
        });
        // The joiner is waiting for the child.
        common::wait_until_thread_asleep(tid_rx.recv().unwrap());
        let (tx, rx) = mpsc::channel();
        s.spawn(move || {
            let _ = tx.send((p.is_alive(), p.exitcode()));
        });
        let answer = rx.recv_timeout(common::DEADLINE);
        assert_eq!(answer, Ok((true, None)), "is_alive/exitcode waited for the joiner (no answer within the deadline)");
        p.kill().unwrap();
        assert!(matches!(joiner.join().unwrap(), Err(ProcessError::Signaled { signal: 9, .. })));
    });
}

shmproc::entry! {
    /// Starts and joins a grandchild: takes the child-list and registry
    /// locks in a forked child.
    fn start_one_grandchild(total: Value<u64>) -> Result<(), String> {
        let mut g = Process::new(add_one, total);
        g.start().map_err(|e| e.to_string())?;
        common::join(&g).map_err(|e| e.to_string())
    }
}

/// Issue 9 item 12: a forked child must not take a lock another parent
/// thread held at the fork. Before the fix, a child forked while another
/// thread held stdout's lock hung in its final flush, and one forked while
/// another thread was inside `active_children()` could hang on the child
/// list when starting its own child.
#[test]
fn a_forked_child_does_not_inherit_locks_held_by_other_threads() {
    let mut p = Process::new(succeed, ()).with_start_method(StartMethod::Fork);
    let forker = common::gettid();
    let (forking, forked) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|s| {
        let (held_tx, held_rx) = mpsc::channel();
        let (forking, forked) = (&forking, &forked);
        s.spawn(move || {
            let _out = std::io::stdout().lock();
            held_tx.send(()).unwrap();
            // Held until the forking thread waits for it (start takes it
            // across the fork) or has forked (it did not need it): either
            // way, another thread held it when start began.
            common::wait_for("the forking thread to block on stdout's lock, or to fork", || {
                forked.load(Ordering::SeqCst) || (forking.load(Ordering::SeqCst) && common::thread_in_futex(forker))
            });
        });
        held_rx.recv().unwrap();
        forking.store(true, Ordering::SeqCst);
        let started = p.start();
        forked.store(true, Ordering::SeqCst);
        started.unwrap();
    });
    common::join(&p).unwrap();

    let total = Value::new(0u64).unwrap();
    let stop = AtomicBool::new(false);
    let rounds = 20;
    std::thread::scope(|s| {
        // Each keeps one of the crate's locks held most of the time.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let _ = shmproc::current_process();
            }
        });
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let _ = shmproc::active_children();
            }
        });
        // Stops the spinners however this closure ends (a failed
        // assertion must not leave the scope waiting for them).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        for _ in 0..rounds {
            let mut p = Process::new(start_one_grandchild, total.clone()).with_start_method(StartMethod::Fork);
            p.start().unwrap();
            common::join(&p).unwrap();
        }
    });
    assert_eq!(total.get().unwrap(), rounds);
}

// --- settings after start, close (newcomer report items 1 and 2) -----------------

/// SIGKILLs a started child when dropped (by pid: the handle stays free for
/// `&mut` calls). The child is ours and not reaped before the drop, so its
/// pid still names it.
struct KillPidOnDrop(u32);

impl Drop for KillPidOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGKILL) };
    }
}

/// Newcomer report item 1: `with_daemon(true)` after `start` used to be accepted
/// and make `daemon()` say true while the child was started (and treated at
/// exit, and listed by `active_children`) as a non-daemon. Now `set_daemon`
/// refuses, `with_daemon` changes nothing, and every view agrees.
#[test]
fn daemon_and_start_method_cannot_change_after_start() {
    let started = Event::create(&name("daemon-after-start")).unwrap();
    let mut p = Process::new(sleep_long, started.clone()).with_start_method(StartMethod::Spawn);
    p.start().unwrap();
    let kill = KillPidOnDrop(p.pid().unwrap());
    assert!(started.wait_timeout(common::DEADLINE), "child did not start");
    assert!(matches!(p.set_daemon(true), Err(ProcessError::AlreadyStarted(_))));
    assert!(!p.daemon());
    assert!(matches!(p.set_start_method(StartMethod::Fork), Err(ProcessError::AlreadyStarted(_))));
    assert_eq!(p.start_method(), StartMethod::Spawn);
    let p = p.with_daemon(true).with_start_method(StartMethod::Fork);
    assert!(!p.daemon(), "with_daemon after start must not claim a daemon");
    assert_eq!(p.start_method(), StartMethod::Spawn);
    let pid = p.pid().unwrap();
    let listed: Vec<Process> = shmproc::active_children().into_iter().filter(|c| c.pid() == Some(pid)).collect();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].daemon());
    assert_eq!(listed[0].start_method(), StartMethod::Spawn);
    drop(kill);
    assert!(matches!(common::join(&p), Err(ProcessError::Signaled { signal: 9, .. })));
}

/// A name set after start is the parent's name for the child everywhere
/// (as in Python): this handle, `active_children`, and its errors.
#[test]
fn a_name_set_after_start_is_used_by_active_children_and_errors() {
    let started = Event::create(&name("rename-after-start")).unwrap();
    let mut p = Process::new(sleep_long, started.clone());
    p.start().unwrap();
    let pid = p.pid().unwrap();
    let kill = KillPidOnDrop(pid);
    assert!(started.wait_timeout(common::DEADLINE), "child did not start");
    let renamed = format!("renamed-{pid}");
    p.set_name(renamed.clone());
    assert_eq!(p.name(), renamed);
    let listed: Vec<Process> = shmproc::active_children().into_iter().filter(|c| c.pid() == Some(pid)).collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name(), renamed);
    // Python's _identity: [n] for this process's n-th child, as the name says.
    assert_eq!(listed[0].identity(), p.identity());
    assert_eq!(p.identity().len(), 1);
    drop(kill);
    match common::join(&p) {
        Err(ProcessError::Signaled { name, signal: 9 }) => assert_eq!(name, renamed),
        other => panic!("{other:?}"),
    }
}

/// Newcomer report item 2: after `close`, `join` said "has not been started".
#[test]
fn a_closed_process_says_it_is_closed() {
    let mut p = Process::new(succeed, ());
    p.start().unwrap();
    common::join(&p).unwrap();
    p.close().unwrap();
    for r in [p.join(), p.terminate(), p.kill(), p.join_timeout(Duration::ZERO).map(|_| ()), p.start()] {
        match r {
            Err(e @ ProcessError::Closed(_)) => assert!(e.to_string().contains("process object"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), None);
    assert!(matches!(p.set_daemon(true), Err(ProcessError::Closed(_))));
    p.close().unwrap(); // again: a no-op
}

// --- a child's panic names the process (newcomer report item 5) -----------

const PANIC_INNER: &str = "SHMPROC_TEST_PANIC_INNER";

/// Run only by `a_childs_panic_message_names_the_process`, in a process of
/// its own (its stderr captured, libtest's capture off).
#[test]
fn inner_panicking_children() {
    if std::env::var_os(PANIC_INNER).is_none() {
        return;
    }
    for (m, who) in [(StartMethod::Spawn, "spawned-child"), (StartMethod::Fork, "forked-child")] {
        let mut p = Process::new(explode, format!("kaboom from {who}")).with_name(who).with_start_method(m);
        p.start().unwrap();
        assert!(matches!(common::join(&p), Err(ProcessError::Panicked { .. })));
    }
    // The parent's own panics are not attributed to a child.
    let r = std::panic::catch_unwind(|| panic!("parent panics"));
    assert!(r.is_err());
}

/// Before the fix a spawned child's panic read "thread '<unnamed>'
/// panicked" and a forked one's carried the forking thread's name: neither
/// said which process. Python prints "Process Process-1:" first.
#[test]
fn a_childs_panic_message_names_the_process() {
    let (status, err) = common::run_within(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "inner_panicking_children", "--test-threads=1", "--nocapture"])
            .env(PANIC_INNER, "1"),
    );
    assert!(status.success(), "{err}");
    for who in ["spawned-child", "forked-child"] {
        let at = err.find(&format!("Process {who}:\n")).unwrap_or_else(|| panic!("no 'Process {who}:' line: {err}"));
        let rest = &err[at..];
        let panic_at = rest.find(&format!("kaboom from {who}")).unwrap_or_else(|| panic!("{err}"));
        assert!(rest[..panic_at].contains("panicked"), "the name comes right before the panic: {err}");
    }
    assert!(err.contains("parent panics"), "{err}");
    assert!(!err.contains("Process MainProcess:"), "{err}");
}

// --- entry! takes a tuple pattern (newcomer report item 7) ----------------

shmproc::entry! {
    /// Before the fix: "no rules expected `(`".
    fn add_under_lock((lock, total, n): (Lock, Value<u64>, u64)) -> Result<(), String> {
        let _held = lock.lock().map_err(|e| e.to_string())?;
        let now = total.get().map_err(|e| e.to_string())?;
        total.set(now + n).map_err(|e| e.to_string())
    }
}

shmproc::entry! {
    fn ignore_argument(_: u32) {}
}

#[test]
fn an_entry_can_take_its_tuple_argument_apart_in_the_signature() {
    let total = Value::new(1u64).unwrap();
    both_methods(|m| {
        let mut p = Process::new(add_under_lock, (Lock::new().unwrap(), total.clone(), 20)).with_start_method(m);
        p.start().unwrap();
        common::join(&p).unwrap_or_else(|e| panic!("{m:?}: {e}"));
        let mut p = Process::new(ignore_argument, 7).with_start_method(m);
        p.start().unwrap();
        common::join(&p).unwrap();
    });
    assert_eq!(total.get().unwrap(), 41);
}
