//! Review 22: the process lifecycle under real SIGKILLs, SIGSTOPs and
//! exits from every stage (start-up, run, exit), the multi-object `wait`
//! on processes, and what dies with a killed parent.

mod common;

use std::time::{Duration, Instant};

use shmproc::process::StartMethod;
use shmproc::{Event, Process, ProcessError, Queue, Value};

fn both_methods(f: impl Fn(StartMethod)) {
    f(StartMethod::Spawn);
    f(StartMethod::Fork);
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => !s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) touches no memory; `pid` is a child of this test not yet reaped.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

shmproc::entry! {
    fn exit_with(code: i32) {
        std::process::exit(code);
    }
}

shmproc::entry! {
    fn sleep_until_killed(started: Event) {
        started.set();
        std::thread::sleep(common::DEADLINE * 5);
    }
}

#[test]
fn an_entry_calling_process_exit_gives_its_code() {
    both_methods(|m| {
        let mut p = Process::new(exit_with, 7).with_start_method(m);
        p.start().unwrap();
        match common::join(&p) {
            Err(ProcessError::Exited { code: 7, .. }) => {}
            other => panic!("{m}: {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(7), "{m}");
        let mut p = Process::new(exit_with, 0).with_start_method(m);
        p.start().unwrap();
        common::join(&p).unwrap();
        assert_eq!(p.exitcode(), Some(0), "{m}");
    });
}

#[test]
fn a_stopped_child_is_alive_and_a_kill_ends_it_with_minus_9() {
    both_methods(|m| {
        let started = Event::new().unwrap();
        let mut p = Process::new(sleep_until_killed, started.clone()).with_start_method(m);
        p.start().unwrap();
        assert!(started.wait_timeout(common::DEADLINE));
        let pid = p.pid().unwrap();
        signal(pid, libc::SIGSTOP);
        assert!(!p.join_timeout(Duration::from_millis(100)).unwrap());
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        let ready = shmproc::wait(&mut [&mut p], Some(Duration::from_millis(100))).unwrap();
        assert!(ready.is_empty(), "{m}: a stopped child is not ended");
        p.kill().unwrap();
        match common::join(&p) {
            Err(ProcessError::Signaled { signal: 9, .. }) => {}
            other => panic!("{m}: {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(-9));
        assert!(!p.is_alive());
        // After the join: a no-op, whoever has the pid now.
        p.terminate().unwrap();
        p.kill().unwrap();
    });
}

#[test]
fn a_wait_in_one_thread_while_another_joins_sees_the_kill() {
    both_methods(|m| {
        let started = Event::new().unwrap();
        let mut p = Process::new(sleep_until_killed, started.clone()).with_start_method(m);
        p.start().unwrap();
        assert!(started.wait_timeout(common::DEADLINE));
        let pid = p.pid().unwrap();
        let mut q = Queue::<u32>::new(2).unwrap();
        std::thread::scope(|s| {
            let pr = &p;
            let joiner = s.spawn(move || pr.join_timeout(common::DEADLINE));
            let killer = s.spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                signal(pid, libc::SIGKILL);
            });
            // A second handle on the child (from `active_children`): the
            // wait takes it by `&mut` while the joiner borrows `p`.
            let t = Instant::now();
            let mut view = shmproc::active_children().into_iter().find(|c| c.pid() == Some(pid)).unwrap();
            let ready = shmproc::wait(&mut [&mut q, &mut view], Some(common::DEADLINE)).unwrap();
            assert_eq!(ready.iter().collect::<Vec<_>>(), [1], "{m} after {:?}", t.elapsed());
            killer.join().unwrap();
            assert!(matches!(joiner.join().unwrap(), Err(ProcessError::Signaled { signal: 9, .. })));
        });
        assert_eq!(p.exitcode(), Some(-9));
    });
}

shmproc::task! {
    fn nap(ms: u64) -> () {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

shmproc::entry! {
    /// Owns a pool (workers started with `fork` or not), a Manager with a
    /// list, a queue with an item and a daemon child; records the pids of
    /// the workers and the daemon, then waits to be killed.
    fn owner_of_everything((pids, fork, ready): (shmproc::Array<u32>, bool, Event)) {
        let method = if fork { StartMethod::Fork } else { StartMethod::Spawn };
        let pool = shmproc::Pool::builder().processes(2).start_method(method).build().unwrap();
        let _busy = pool.apply_async(nap, 3_600_000).unwrap();
        let m = shmproc::Manager::new().unwrap();
        let l = m.list::<u64>("l").unwrap();
        l.append(5).unwrap();
        let q = Queue::<u64>::new(4).unwrap();
        q.put(1).unwrap();
        let started = Event::new().unwrap();
        let mut d = Process::new(sleep_until_killed, started.clone()).with_daemon(true).with_start_method(method);
        d.start().unwrap();
        assert!(started.wait_timeout(common::DEADLINE));
        let (workers, _) = pool.__created();
        for (i, p) in workers.iter().enumerate().take(2) {
            pids.set(i, *p).unwrap();
        }
        pids.set(2, d.pid().unwrap()).unwrap();
        ready.set();
        std::thread::sleep(common::DEADLINE * 5);
    }
}

/// The segments made by processes `pids` (unique names carry the
/// creator's pid) left in /dev/shm.
fn segments_made_by(pids: &[u32]) -> Vec<String> {
    let prefixes: Vec<String> = pids.iter().map(|p| format!("{}anon.{p}.", shmproc::NAME_PREFIX)).collect();
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_owned))
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .collect()
}

/// Runs in a private /dev/shm (the test's `unshare`): the whole directory
/// is this binary's.
#[test]
fn everything_a_killed_owner_made_dies_or_is_removed_by_gc() {
    both_methods(|m| {
        let pids = shmproc::Array::from_slice(&[0u32, 0, 0]).unwrap();
        let ready = Event::new().unwrap();
        let mut owner = Process::new(owner_of_everything, (pids.clone(), m == StartMethod::Fork, ready.clone()));
        owner.start().unwrap();
        assert!(ready.wait_timeout(common::DEADLINE), "{m}: owner never ready");
        let children: Vec<u32> = (0..3).map(|i| pids.get(i).unwrap()).collect();
        assert!(children.iter().all(|&p| p != 0 && alive(p)));
        owner.kill().unwrap();
        assert!(matches!(common::join(&owner), Err(ProcessError::Signaled { signal: 9, .. })));
        let t = Instant::now();
        while children.iter().any(|&p| alive(p)) && t.elapsed() < common::DEADLINE {
            std::thread::sleep(Duration::from_millis(5));
        }
        let left: Vec<u32> = children.iter().copied().filter(|&p| alive(p)).collect();
        for &p in &left {
            signal(p, libc::SIGKILL);
        }
        assert!(left.is_empty(), "{m}: {left:?} of {children:?} outlived their killed owner");
        let removed = shmproc::gc().unwrap();
        let mut makers = children.clone();
        makers.push(owner.pid().unwrap());
        let left = segments_made_by(&makers);
        assert!(left.is_empty(), "{m}: gc removed {removed:?} and left {left:?}");
    });
}

shmproc::task! {
    /// Like a task whose library handles SIGTERM (a graceful-shutdown
    /// hook): ignores it, records its pid, works for much longer than
    /// the test.
    fn ignores_sigterm(slot: Value<u32>) -> () {
        // SAFETY: setting a signal disposition to SIG_IGN.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
        slot.set(std::process::id()).unwrap();
        std::thread::sleep(common::DEADLINE * 5);
    }
}

shmproc::entry! {
    /// Runs a task that ignores SIGTERM on a pool, then leaves with
    /// `std::process::exit` while the pool is alive (its drop never runs).
    fn exit_with_a_busy_pool(slot: Value<u32>) {
        let pool = shmproc::Pool::new(1).unwrap();
        let _busy = pool.apply_async(ignores_sigterm, slot.clone()).unwrap();
        while slot.get().unwrap() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::process::exit(0);
    }
}

/// A process that exits normally while its pool runs a task ignoring
/// SIGTERM: the exit handler must not wait forever for that worker (the
/// pool's own drop kills workers at once; so must the exit).
#[test]
fn an_exit_with_a_live_pool_whose_task_ignores_sigterm_does_not_hang() {
    let slot = Value::new(0u32).unwrap();
    let mut owner = Process::new(exit_with_a_busy_pool, slot.clone());
    owner.start().unwrap();
    let exited = owner.join_timeout(Duration::from_secs(20));
    let worker = slot.get().unwrap();
    let hung = !matches!(exited, Ok(true));
    if hung {
        let _ = owner.kill();
        let _ = common::join(&owner);
    }
    let t = Instant::now();
    while worker != 0 && alive(worker) && t.elapsed() < common::DEADLINE {
        std::thread::sleep(Duration::from_millis(5));
    }
    let worker_left = worker != 0 && alive(worker);
    if worker_left {
        signal(worker, libc::SIGKILL);
    }
    let _ = shmproc::gc();
    assert!(!hung, "the owner's exit hung on its pool worker ({exited:?})");
    assert!(!worker_left, "the worker outlived its owner");
}
/// Set in the environment of a copy of this test binary that
/// [`a_program_whose_binary_was_deleted_or_replaced_still_starts_its_own_children`]
/// runs (its value: what to do to the copy's file before starting a child).
const EXE_GONE_VAR: &str = "REVIEW22_EXE_GONE";

shmproc::entry! {
    /// Reports which binary the child runs: its `/proc/self/exe` target.
    fn report_exe(out: Queue<String>) {
        let exe = std::fs::read_link("/proc/self/exe").unwrap().to_string_lossy().into_owned();
        out.put(exe).unwrap();
    }
}

/// The role of the copy (does nothing in the test run itself): removes or
/// replaces its own executable file, then starts a child with each method
/// and checks that it ran this very program.
#[test]
fn exe_gone_role() {
    let Ok(what) = std::env::var(EXE_GONE_VAR) else { return };
    let exe = std::env::current_exe().unwrap();
    std::fs::remove_file(&exe).unwrap();
    if what == "replace" {
        // A new build of the program at the same path (another binary).
        std::fs::copy("/bin/true", &exe).unwrap();
    }
    // "<path> (deleted)": the link names the file this process runs.
    let mine = std::fs::read_link("/proc/self/exe").unwrap().to_string_lossy().into_owned();
    both_methods(|m| {
        let out = Queue::<String>::new(2).unwrap();
        let mut p = Process::new(report_exe, out.clone()).with_start_method(m);
        p.start().unwrap_or_else(|e| panic!("{what}, {m}: start: {e}"));
        let joined = common::join(&p);
        assert!(joined.is_ok(), "{what}, {m}: {joined:?}");
        let ran = out.get_timeout(common::DEADLINE).unwrap();
        assert_eq!(ran, mine, "{what}, {m}: the child ran another binary");
    });
}

/// A program whose executable was removed or replaced while it runs (a
/// package upgrade, a rebuild, `cargo install` over it) still starts its
/// own children with `Spawn`, running its own code, as `Fork` does.
#[test]
fn a_program_whose_binary_was_deleted_or_replaced_still_starts_its_own_children() {
    if std::env::var_os(EXE_GONE_VAR).is_some() {
        return;
    }
    for what in ["delete", "replace"] {
        let dir = std::env::temp_dir().join(format!("review22-exe-{}-{what}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("copy");
        std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
        let mut cmd = std::process::Command::new(&copy);
        cmd.args(["--exact", "exe_gone_role", "--test-threads=1", "--nocapture"]).env(EXE_GONE_VAR, what);
        let (status, out) = common::run_within(&mut cmd);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(status.success(), "{what}: {status:?}\n{out}");
    }
}

shmproc::task! {
    fn double(x: u64) -> u64 {
        x * 2
    }
}

/// Forked pool workers, each replaced after one task, while four threads
/// submit as fast as they can (each submission looks the task up in the
/// task registry, under its lock): a worker forked while a submitting
/// thread held that lock inherited it held, and hung forever at its first
/// task's look-up; the item it had taken never finished.
#[test]
fn forked_workers_replaced_while_threads_submit_never_hang() {
    stall_kills::install();
    let kills_before = stall_kills::count();
    let pool =
        shmproc::Pool::builder().processes(2).maxtasksperchild(1).start_method(StartMethod::Fork).build().unwrap();
    let rounds = 300u64;
    let stuck = std::sync::Mutex::new(Vec::new());
    // Other threads submitting to another pool (closed: each submission
    // is the look-up, then a refusal) while the workers are forked.
    let other = shmproc::Pool::new(1).unwrap();
    other.close();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (other, done) = (&other, &done);
            s.spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    assert!(other.apply_async(double, 1).is_err());
                }
            });
        }
        let mut submitters = Vec::new();
        for t in 0..4u64 {
            let (pool, stuck) = (&pool, &stuck);
            submitters.push(s.spawn(move || {
                for i in 0..rounds {
                    let x = t * 1_000_000 + i;
                    let r = pool.apply_async(double, x).unwrap();
                    match r.get_timeout(Duration::from_secs(20)) {
                        Ok(v) => assert_eq!(v, 2 * x),
                        Err(e) => {
                            stuck.lock().unwrap().push(format!("{x}: {e:?}"));
                            return;
                        }
                    }
                }
            }));
        }
        for t in submitters {
            t.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    other.join().unwrap();
    pool.terminate();
    pool.join().unwrap();
    let stuck = stuck.into_inner().unwrap();
    assert!(stuck.is_empty(), "items never finished: {stuck:?}");
    let hung = stall_kills::count() - kills_before;
    assert_eq!(hung, 0, "{hung} forked workers hung before their first item (killed by the pool as stalled)");
}

/// Counts the pool's "killing a stalled worker" warnings (a worker that
/// took up a frame and never began it: here, one that hung).
mod stall_kills {
    use std::sync::atomic::{AtomicU64, Ordering};

    static KILLS: AtomicU64 = AtomicU64::new(0);

    struct Counter;

    impl log::Log for Counter {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record<'_>) {
            let msg = r.args().to_string();
            if msg.contains("passed a frame it did not run") {
                KILLS.fetch_add(1, Ordering::Relaxed);
            }
            eprintln!("[{}] {msg}", r.level());
        }
        fn flush(&self) {}
    }

    pub fn install() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            log::set_logger(&Counter).unwrap();
            log::set_max_level(log::LevelFilter::Warn);
        });
    }

    pub fn count() -> u64 {
        KILLS.load(Ordering::Relaxed)
    }
}

/// A parent thread is inside its panic hook (std holds the hook's lock
/// while the hook runs: a logging or reporting hook can take long) when a
/// pool forks its worker: the worker, installing its own hook at start-up,
/// waited forever for a lock no thread of its would ever release, and the
/// pool's only worker never ran anything.
#[test]
fn a_worker_forked_while_a_parent_thread_panics_still_works() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static IN_HOOK: AtomicBool = AtomicBool::new(false);
    static RELEASE: AtomicBool = AtomicBool::new(false);
    // The process layer's own first fork takes the hook lock in the
    // parent (by design); let it happen first.
    let mut first = Process::new(exit_with, 0).with_start_method(StartMethod::Fork);
    first.start().unwrap();
    common::join(&first).unwrap();
    let previous = std::sync::Arc::new(std::panic::take_hook());
    let chained = std::sync::Arc::clone(&previous);
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("slow-panic-hook") {
            IN_HOOK.store(true, Ordering::SeqCst);
            // Until the pool is built, or 2 s (a parent that waits for
            // the hook before it forks: then it is built after).
            let t = Instant::now();
            while !RELEASE.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(1));
            }
        } else {
            chained(info);
        }
    }));
    let panicker = std::thread::Builder::new()
        .name("slow-panic-hook".into())
        .spawn(|| panic!("a parent thread's panic, reported slowly"))
        .unwrap();
    while !IN_HOOK.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let pool = shmproc::Pool::builder().processes(1).start_method(StartMethod::Fork).build().unwrap();
    let r = pool.apply_async(double, 21).unwrap();
    RELEASE.store(true, Ordering::SeqCst);
    assert!(panicker.join().is_err());
    let got = r.get_timeout(Duration::from_secs(20));
    pool.terminate();
    pool.join().unwrap();
    std::panic::set_hook(Box::new(move |info| previous(info)));
    assert_eq!(got.ok(), Some(42), "the forked worker never ran the item");
}

shmproc::entry! {
    /// Writes into a pipe whose reading end is closed, as a child writing
    /// to a subprocess that left (or to `stdout | head`) does: a Rust
    /// program gets `BrokenPipe` (std ignores SIGPIPE before `main`).
    fn write_to_a_closed_pipe() -> Result<(), String> {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: closing the read end this entry just made.
        unsafe { libc::close(fds[0]) };
        // SAFETY: a one-byte write from a live buffer to the write end.
        let r = unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) };
        let err = std::io::Error::last_os_error();
        // SAFETY: closing the write end.
        unsafe { libc::close(fds[1]) };
        if r < 0 && err.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(format!("write: {r}, {err}")) }
    }
}

/// A child's entry runs as `main` would in a Rust program: writing into a
/// closed pipe is an `EPIPE` error, not a death by SIGPIPE (a spawned
/// child's entry runs before std's runtime set-up, which ignores SIGPIPE).
#[test]
fn a_child_writing_into_a_closed_pipe_gets_an_error_not_sigpipe() {
    both_methods(|m| {
        let mut p = Process::new(write_to_a_closed_pipe, ()).with_start_method(m);
        p.start().unwrap();
        let r = common::join(&p);
        assert!(r.is_ok(), "{m}: {r:?} (exit code {:?})", p.exitcode());
    });
}

/// An argument whose decoding (in the child) announces itself and then
/// hangs: the child is killed mid-handoff, its handles half opened.
struct SlowToOpen {
    value: Value<u64>,
    decoding: Event,
}

impl shmproc::process::Handoff for SlowToOpen {
    fn encode(&self, out: &mut Vec<u8>) {
        self.value.encode(out);
        self.decoding.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, shmproc::process::HandoffError> {
        let value = Value::decode(input)?;
        let decoding = Event::decode(input)?;
        decoding.set();
        std::thread::sleep(common::DEADLINE * 5);
        Ok(SlowToOpen { value, decoding })
    }
}

shmproc::entry! {
    fn never_runs(arg: SlowToOpen) {
        let _ = arg.value.get();
    }
}

/// A child killed while it opens its argument: `join` reports the kill,
/// and the object made only for the child (whose name the parent's kept
/// copy of the argument owns) is gone from /dev/shm once the child is
/// reaped, with the status segment. (Spawn: a forked child decodes
/// nothing, it has the argument itself.)
#[test]
fn a_child_killed_mid_handoff_leaves_nothing_behind() {
    [StartMethod::Spawn].into_iter().for_each(|m| {
        let decoding = Event::new().unwrap();
        let value = Value::new(7u64).unwrap();
        let value_name = value.name().to_owned();
        let mut p = Process::new(never_runs, SlowToOpen { value, decoding: decoding.clone() }).with_start_method(m);
        p.start().unwrap();
        let pid = p.pid().unwrap();
        assert!(decoding.wait_timeout(common::DEADLINE), "the child never decoded");
        p.kill().unwrap();
        assert!(matches!(common::join(&p), Err(ProcessError::Signaled { signal: 9, .. })), "{m}");
        assert!(!alive(pid));
        let left = segments_made_by(&[std::process::id(), pid]);
        assert!(
            !left.iter().any(|n| n.ends_with(&value_name)),
            "{m}: the child's own object {value_name} is left: {left:?}"
        );
    });
}
