//! Review 10: owners killed with SIGKILL (a Manager's creator, a Pool's
//! owner, a Process parent, an unbounded queue's creator), and other
//! users on the same host.

mod common;

use std::time::{Duration, Instant};

use shmproc::{Event, Manager, Pool, Process};

const BOUND: Duration = Duration::from_secs(20);

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => !s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// The user names in /dev/shm starting with `prefix`.
fn shm_starting_with(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_prefix("shmproc.").map(str::to_owned))
        .filter(|u| u.starts_with(prefix))
        .collect()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < BOUND, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kill9(pid: u32) {
    // SAFETY: kill(2) with a pid and a signal number touches no memory.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

// ---------------------------------------------------------------- Pool owner

shmproc::task! { fn r10_slow(x: u64) -> u64 { std::thread::sleep(Duration::from_millis(20)); x } }

shmproc::entry! {
    /// Owns a pool of 2, reports its workers' pids, then maps slowly until killed.
    fn r10_pool_owner(args: (shmproc::Array<u32>, bool)) {
        let (pids, fork) = args;
        let method = if fork { shmproc::process::StartMethod::Fork } else { shmproc::process::StartMethod::Spawn };
        let pool = Pool::builder().processes(2).start_method(method).build().unwrap();
        let (workers, _) = pool.__created();
        for (i, p) in workers.iter().enumerate().take(2) {
            pids.set(i, *p).unwrap();
        }
        pids.set(2, 1).unwrap();
        let _ = pool.map(r10_slow, 0..100_000u64);
    }
}

/// A Pool's owner is killed with SIGKILL in the middle of a `map`: its
/// workers leave within about a second, and `gc()` then removes every
/// segment the owner (and its workers) left in /dev/shm.
#[test]
fn pool_owner_killed_mid_map_workers_leave_and_gc_removes_what_is_left() {
    pool_owner_killed_mid_map(false);
}

/// The same with forked workers.
#[test]
fn pool_owner_killed_mid_map_forked_workers_leave_and_gc_removes_what_is_left() {
    pool_owner_killed_mid_map(true);
}

fn pool_owner_killed_mid_map(fork: bool) {
    let pids = shmproc::Array::from_slice(&[0u32, 0, 0]).unwrap();
    let mut owner = Process::new(r10_pool_owner, (pids.clone(), fork));
    owner.start().unwrap();
    wait_until("the owner's workers to start", || pids.get(2).unwrap() != 0);
    std::thread::sleep(Duration::from_millis(300));
    let workers = [pids.get(0).unwrap(), pids.get(1).unwrap()];
    let owner_pid = owner.pid().unwrap();
    owner.kill().unwrap();
    let _ = common::join(&owner);
    let killed = Instant::now();
    for p in workers {
        while alive(p) && killed.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let took = killed.elapsed();
    let left_running: Vec<u32> = workers.iter().copied().filter(|&p| alive(p)).collect();
    for &p in &left_running {
        kill9(p);
    }
    // (Another test's gc, running in parallel, may have removed them already.)
    let before: Vec<String> =
        workers.iter().chain([owner_pid].iter()).flat_map(|p| shm_starting_with(&format!("anon.{p}."))).collect();
    let removed = shmproc::gc().unwrap();
    let after: Vec<String> =
        workers.iter().chain([owner_pid].iter()).flat_map(|p| shm_starting_with(&format!("anon.{p}."))).collect();
    for a in &after {
        let _ = shmproc::unlink(a);
    }
    assert!(left_running.is_empty(), "workers {left_running:?} still running {took:?} after the owner's SIGKILL");
    assert!(after.is_empty(), "gc() left {after:?} of the killed pool owner (had {before:?}, gc removed {removed:?})");
}

// ------------------------------------------------------- Process parent killed

shmproc::entry! {
    /// Blocks on what its parent holds: the lock (held by the parent) and
    /// the pipe (the parent never sends). Reports in `out`: [pid, step,
    /// lock outcome, recv outcome]; outcomes: 1 OwnerDied, 2 Ok, 3 other,
    /// for recv 1 Disconnected, 2 Ok, 3 other.
    fn r10_blocked_grandchild(args: (shmproc::Lock, shmproc::RLock, shmproc::Connection, shmproc::Array<u32>)) {
        let (lock, rlock, mut conn, out) = args;
        out.set(0, std::process::id()).unwrap();
        out.set(1, 1).unwrap();
        let got = match lock.lock() {
            Err(shmproc::LockError::OwnerDied(mut g)) => { g.make_consistent(); 1 }
            Ok(_) => 2,
            Err(_) => 3,
        };
        out.set(2, got).unwrap();
        let got = match rlock.lock() {
            Err(shmproc::LockError::OwnerDied(mut g)) => {
                g.make_consistent();
                1
            }
            Ok(_) => 2,
            Err(_) => 3,
        };
        out.set(4, got).unwrap();
        out.set(1, 2).unwrap();
        let got = match conn.recv::<u64>() {
            Err(e) if format!("{e:?}").contains("Disconnected") => 1,
            Ok(_) => 2,
            Err(_) => 3,
        };
        out.set(3, got).unwrap();
        out.set(1, 3).unwrap();
    }
}

shmproc::entry! {
    /// Holds a lock, keeps one end of a pipe, starts a (non-daemon) child
    /// blocked on both, then waits to be killed.
    fn r10_parent_of_blocked(args: (shmproc::Array<u32>, bool)) {
        let (out, fork) = args;
        let method = if fork { shmproc::process::StartMethod::Fork } else { shmproc::process::StartMethod::Spawn };
        let lock = shmproc::Lock::new().unwrap();
        let guard = lock.lock().unwrap();
        let rlock = shmproc::RLock::new().unwrap();
        let r1 = rlock.lock().unwrap();
        let r2 = rlock.lock().unwrap();
        let (mine, theirs) = shmproc::pipe(true).unwrap();
        let mut child = Process::new(r10_blocked_grandchild, (lock.clone(), rlock.clone(), theirs, out.clone()))
            .with_start_method(method);
        child.start().unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let _ = (&guard, &r1, &r2, &mine, &child);
        }
    }
}

/// A Process parent is killed with SIGKILL while its (non-daemon) child
/// waits on a lock the parent holds, then on a pipe whose other end the
/// parent held: the child is told (`OwnerDied`, then `Disconnected`), as
/// documented, and does not hang.
#[test]
fn a_child_blocked_on_its_killed_parents_lock_and_pipe_is_told() {
    child_blocked_on_killed_parent(false);
}

/// The same with a forked child.
#[test]
fn a_forked_child_blocked_on_its_killed_parents_lock_and_pipe_is_told() {
    child_blocked_on_killed_parent(true);
}

fn child_blocked_on_killed_parent(fork: bool) {
    let out = shmproc::Array::from_slice(&[0u32; 5]).unwrap();
    let mut parent = Process::new(r10_parent_of_blocked, (out.clone(), fork));
    parent.start().unwrap();
    wait_until("the grandchild to start", || out.get(1).unwrap() == 1);
    let gc_pid = out.get(0).unwrap();
    let parent_pid = parent.pid().unwrap();
    // Wait until it sleeps in the lock.
    common::wait_until_asleep(gc_pid, 1);
    parent.kill().unwrap();
    let _ = common::join(&parent);
    let t = Instant::now();
    while out.get(1).unwrap() != 3 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let step = out.get(1).unwrap();
    let still = alive(gc_pid);
    if still {
        kill9(gc_pid);
    }
    let _ = shmproc::gc();
    let left = shm_starting_with(&format!("anon.{parent_pid}."));
    assert_eq!(
        step,
        3,
        "the child still blocked at step {step} 10 s after its parent's SIGKILL (outcomes {:?})",
        out.to_vec()
    );
    assert_eq!(out.get(2).unwrap(), 1, "lock: {:?}", out.to_vec());
    assert_eq!(out.get(3).unwrap(), 1, "recv: {:?}", out.to_vec());
    assert_eq!(out.get(4).unwrap(), 1, "rlock: {:?}", out.to_vec());
    assert!(left.is_empty(), "gc left {left:?}");
}

// ------------------------------------------------------- Manager creator killed

shmproc::entry! {
    fn r10_manager_maker(args: (String, Event)) {
        let (name, ready) = args;
        let mgr = Manager::create(&name).unwrap();
        let list = mgr.list::<String>("list").unwrap();
        list.append("first".into()).unwrap();
        let dict = mgr.dict::<String, u64>("dict").unwrap();
        dict.insert("k".into(), 1).unwrap();
        let q = mgr.queue::<u64>("q", 0).unwrap();
        q.put(7).unwrap();
        ready.set();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let _ = (&mgr, &list, &dict, &q);
        }
    }
}

/// A Manager's creator is killed with SIGKILL while another process uses
/// its list, dict and unbounded queue; `gc()` runs meanwhile. The user's
/// handles keep working (growth included), and once the user drops them
/// nothing of the Manager is left after a second `gc()`.
#[test]
fn a_managers_creator_killed_its_users_keep_working_across_gc_and_nothing_is_left() {
    let name = format!("review10-mgr-{}", std::process::id());
    let ready = Event::new().unwrap();
    let mut maker = Process::new(r10_manager_maker, (name.clone(), ready.clone()));
    maker.start().unwrap();
    assert!(ready.wait_timeout(BOUND), "the maker did not get ready");
    let mgr = Manager::open(&name).unwrap();
    let list = mgr.list::<String>("list").unwrap();
    let dict = mgr.dict::<String, u64>("dict").unwrap();
    let q = mgr.queue::<u64>("q", 0).unwrap();
    let segments: Vec<String> = mgr.names().unwrap().into_iter().map(|e| e.segment).collect();
    drop(mgr);
    maker.kill().unwrap();
    let _ = common::join(&maker);
    let removed = shmproc::gc().unwrap();
    // Keep using everything; all of it grows.
    const N: u64 = 20_000;
    for i in 0..N {
        list.append(format!("{i:0>200}")).unwrap();
        dict.insert(format!("key{i}"), i).unwrap();
    }
    for i in 0..200_000u64 {
        q.put_nowait(i).unwrap();
    }
    assert_eq!(list.len() as u64, N + 1);
    assert_eq!(list.get(-1).unwrap(), format!("{:0>200}", N - 1));
    assert_eq!(dict.get(&"key777".into()).unwrap(), Some(777));
    assert_eq!(dict.get(&"k".into()).unwrap(), Some(1));
    assert_eq!(q.get_nowait().unwrap(), 7);
    for i in 0..200_000u64 {
        assert_eq!(q.get_nowait().unwrap(), i);
    }
    drop((list, dict, q));
    let removed2 = shmproc::gc().unwrap();
    let mut left: Vec<String> = shm_starting_with(&name);
    for s in &segments {
        left.extend(shm_starting_with(s));
    }
    for l in &left {
        let _ = shmproc::unlink(l);
    }
    assert!(left.is_empty(), "left in /dev/shm: {left:?} (first gc removed {removed:?}, second {removed2:?})");
}

// ------------------------------------------- unbounded queue creator killed

shmproc::entry! {
    fn r10_queue_maker(args: (String, Event)) {
        let (name, ready) = args;
        let q = shmproc::Queue::<u64>::create(&name, 0).unwrap();
        ready.set();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let _ = &q;
        }
    }
}

shmproc::entry! {
    /// Puts `n` items into the unbounded queue `name`, growing it.
    fn r10_grower(args: (String, u64, u64)) -> Result<(), String> {
        let (name, from, n) = args;
        let q = shmproc::Queue::<u64>::open(&name).map_err(|e| e.to_string())?;
        for i in from..from + n {
            q.put_timeout(i, BOUND).map_err(|e| format!("put {i}: {e:?}"))?;
        }
        Ok(())
    }
}

/// An unbounded queue's creator is killed with SIGKILL while two producers
/// grow the queue; `gc()` runs meanwhile. No item is lost, the consumer
/// gets each producer's items in order, and once every holder is gone a
/// second `gc()` leaves nothing of the queue (rings included).
#[test]
fn an_unbounded_queues_creator_killed_while_producers_grow_it_loses_nothing_across_gc() {
    const N: u64 = 150_000;
    let name = format!("review10-chain-{}", std::process::id());
    let ready = Event::new().unwrap();
    let mut maker = Process::new(r10_queue_maker, (name.clone(), ready.clone()));
    maker.start().unwrap();
    assert!(ready.wait_timeout(BOUND), "the maker did not get ready");
    let q = shmproc::Queue::<u64>::open(&name).unwrap();
    let mut producers: Vec<Process> =
        (0..2u64).map(|p| Process::new(r10_grower, (name.clone(), p * 1_000_000, N))).collect();
    for p in &mut producers {
        p.start().unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    maker.kill().unwrap();
    let _ = common::join(&maker);
    let removed = shmproc::gc().unwrap();
    let mut next = [0u64, 1_000_000];
    let end = Instant::now() + BOUND;
    let mut bad = None;
    while next[0] < N || next[1] < 1_000_000 + N {
        match q.get_timeout(Duration::from_millis(100)) {
            Ok(v) => {
                let k = (v >= 1_000_000) as usize;
                if v != next[k] {
                    bad = Some(format!("got {v}, expected {}", next[k]));
                    break;
                }
                next[k] += 1;
            }
            Err(e) if Instant::now() > end => {
                bad = Some(format!("{e:?} with {next:?} reached"));
                break;
            }
            Err(_) => {}
        }
    }
    let outcomes: Vec<_> = producers.iter().map(|p| common::join(p).map_err(|e| e.to_string())).collect();
    drop(q);
    let removed2 = shmproc::gc().unwrap();
    let left = shm_starting_with(&name);
    for l in &left {
        let _ = shmproc::unlink(l);
    }
    assert!(bad.is_none(), "{bad:?} (gc removed {removed:?}); producers: {outcomes:?}");
    assert!(outcomes.iter().all(Result::is_ok), "producers: {outcomes:?}");
    assert!(left.is_empty(), "left {left:?} (second gc removed {removed2:?})");
}

// ---------------------------------------------------------------- other users

const NOBODY: u32 = 65534;
/// The other-user tests run one at a time: one's `gc()` as nobody would
/// rightly remove the dead segment the other leaves as nobody.
static AS_OTHER_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Set in the re-run of a test that plays another user.
const AS_OTHER: &str = "SHMPROC_REVIEW10_AS_OTHER";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `test` again as `nobody` (setpriv) with `AS_OTHER=arg`; returns
/// whether it passed and its output (deadline 30 s), or None when this
/// process cannot run others (not root, no setpriv).
fn run_as_nobody(test: &str, arg: &str) -> Option<(bool, String)> {
    use std::process::{Command, Stdio};
    if !is_root() {
        return None;
    }
    let id = NOBODY.to_string();
    let mut child = Command::new("setpriv")
        .args(["--reuid", &id, "--regid", &id, "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(AS_OTHER, arg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if text.contains("setpriv:") || text.contains("Permission denied (os error 13)") && !text.contains("running 1 test")
    {
        return None;
    }
    Some((out.status.success() && text.contains("1 passed"), text))
}

/// Our files in /dev/shm: what each object kind made with default options
/// (a Manager's list, dict and grown unbounded queue, a Pool, a pipe, a
/// grown unbounded queue, a lock). Another user (`nobody`) can neither
/// read, write nor remove any of them, nor does its `gc()` touch them;
/// every file is ours and not open to group or others.
#[test]
fn another_user_cannot_open_write_remove_or_gc_our_objects() {
    let test = "another_user_cannot_open_write_remove_or_gc_our_objects";
    if let Ok(arg) = std::env::var(AS_OTHER) {
        let mut opened = Vec::new();
        for path in arg.split(':') {
            if std::fs::File::open(path).is_ok() {
                opened.push(format!("read {path}"));
            }
            if std::fs::OpenOptions::new().write(true).open(path).is_ok() {
                opened.push(format!("write {path}"));
            }
            if std::fs::remove_file(path).is_ok() {
                opened.push(format!("removed {path}"));
            }
            let user = path.strip_prefix("/dev/shm/shmproc.").unwrap();
            let trusting = shmproc::Options::new().trust_owner(0);
            if shmproc::RawSegment::open_with(user, &trusting).is_ok() {
                opened.push(format!("RawSegment::open_with {user}"));
            }
        }
        let removed = shmproc::gc().unwrap();
        assert!(opened.is_empty() && removed.is_empty(), "as nobody: {opened:?}; gc removed {removed:?}");
        return;
    }
    let _one = AS_OTHER_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    if !is_root() {
        println!("skipping: needs root to run as another user");
        return;
    }
    let mgr = Manager::new().unwrap();
    let list = mgr.list::<String>("l").unwrap();
    list.append("x".into()).unwrap();
    let dict = mgr.dict::<String, u64>("d").unwrap();
    dict.insert("k".into(), 1).unwrap();
    let mq = mgr.queue::<u64>("q", 0).unwrap();
    let q = shmproc::Queue::<u64>::new(0).unwrap();
    for i in 0..20_000u64 {
        mq.put(i).unwrap();
        q.put(i).unwrap();
    }
    let pool = Pool::new(1).unwrap();
    let (_, pool_names) = pool.__created();
    let (a, b) = shmproc::pipe(true).unwrap();
    let lock = shmproc::Lock::new().unwrap();
    let mut files: Vec<String> = shm_starting_with(mgr.name());
    for prefix in [list.name(), dict.name(), mq.name(), q.name(), lock.name()] {
        files.extend(shm_starting_with(prefix));
    }
    files.extend(pool_names.iter().cloned());
    // The pipe's two rings among this process's unnamed segments (other
    // tests' may come and go meanwhile: they are tried, not required).
    let known = files.clone();
    let pid = std::process::id();
    files.extend(shm_starting_with(&format!("anon.{pid}.")));
    files.sort();
    files.dedup();
    let mut loose = Vec::new();
    for f in &files {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::metadata(format!("/dev/shm/shmproc.{f}")) else { continue };
        if m.uid() != 0 || m.mode() & 0o077 != 0 {
            loose.push(format!("{f}: uid {} mode {:o}", m.uid(), m.mode()));
        }
    }
    let paths: Vec<String> = files.iter().map(|f| format!("/dev/shm/shmproc.{f}")).collect();
    let run = run_as_nobody(test, &paths.join(":"));
    let gone: Vec<&String> =
        known.iter().filter(|f| !std::path::Path::new(&format!("/dev/shm/shmproc.{f}")).exists()).collect();
    let still =
        (list.get(0).unwrap(), dict.get(&"k".into()).unwrap(), mq.get_nowait().unwrap(), q.get_nowait().unwrap());
    drop((a, b, lock, pool));
    assert!(loose.is_empty(), "files open to others: {loose:?}");
    assert!(gone.is_empty(), "removed while we hold them: {gone:?}");
    assert_eq!(still, ("x".to_string(), Some(1), 0, 0));
    if let Some((ok, out)) = run {
        assert!(ok, "{out}");
        println!("the other user tried {} files", paths.len());
    } else {
        println!("skipping the other user's part: cannot run as nobody");
    }
}

shmproc::entry! {
    fn r10_unused() {}
}

/// A segment another user left behind (its creator died) is that user's:
/// our `gc()` leaves it alone (root included).
#[test]
fn our_gc_leaves_another_users_dead_segments_alone() {
    let test = "our_gc_leaves_another_users_dead_segments_alone";
    if let Ok(name) = std::env::var(AS_OTHER) {
        let l = shmproc::Lock::create(&name).unwrap();
        std::mem::forget(l);
        return;
    }
    let _one = AS_OTHER_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    let name = format!("review10-foreign-{}", std::process::id());
    let Some((ok, out)) = run_as_nobody(test, &name) else {
        println!("skipping: cannot run as nobody");
        return;
    };
    let path = format!("/dev/shm/shmproc.{name}");
    let existed = std::path::Path::new(&path).exists();
    let removed = shmproc::gc().unwrap();
    let kept = std::path::Path::new(&path).exists();
    let _ = std::fs::remove_file(&path);
    let _ = r10_unused;
    assert!(ok && existed, "the other user's run: {out}");
    assert!(kept && !removed.contains(&name), "our gc removed another user's segment ({removed:?})");
}

shmproc::entry! {
    /// Receives a pipe end through a queue and answers on it.
    fn r10_end_by_queue(q: shmproc::Queue<shmproc::Connection>) -> Result<(), String> {
        let mut c = q.get_timeout(BOUND).map_err(|e| format!("get: {e:?}"))?;
        let v = c.recv_timeout::<u64>(BOUND).map_err(|e| format!("recv: {e:?}"))?;
        c.send(&(v + 1)).map_err(|e| format!("send: {e:?}"))
    }
}

/// A pipe end sent to a running process through a queue (not as its
/// start argument) still works there.
#[test]
fn a_pipe_end_sent_through_a_queue_works_in_the_receiver() {
    let q = shmproc::Queue::<shmproc::Connection>::new(2).unwrap();
    let mut p = Process::new(r10_end_by_queue, q.clone());
    p.start().unwrap();
    let (mut a, b) = shmproc::pipe(true).unwrap();
    q.put(b).unwrap();
    a.send(&41u64).unwrap();
    let got = a.recv_timeout::<u64>(BOUND);
    let joined = common::join(&p);
    assert_eq!(got, Ok(42), "child: {joined:?}");
    assert!(joined.is_ok(), "{joined:?}");
}

/// A Manager's creator is killed and `gc()` removes the Manager; a process
/// that still holds a Manager handle then makes a new container through it
/// and drops everything: nothing of the Manager may stay in /dev/shm for
/// good (after a last `gc()`).
#[test]
fn a_container_made_through_a_dead_creators_manager_after_gc_is_not_left_for_good() {
    let name = format!("review10-mgr-late-{}", std::process::id());
    let ready = Event::new().unwrap();
    let mut maker = Process::new(r10_manager_maker, (name.clone(), ready.clone()));
    maker.start().unwrap();
    assert!(ready.wait_timeout(BOUND), "the maker did not get ready");
    let mgr = Manager::open(&name).unwrap();
    maker.kill().unwrap();
    let _ = common::join(&maker);
    let removed = shmproc::gc().unwrap();
    let made = mgr.list::<u64>("late").map(|l| {
        l.append(5).unwrap();
        l.name().to_owned()
    });
    let segments: Vec<String> = mgr.names().map(|n| n.into_iter().map(|e| e.segment).collect()).unwrap_or_default();
    drop(mgr);
    let removed2 = shmproc::gc().unwrap();
    let mut left = shm_starting_with(&name);
    for s in &segments {
        left.extend(shm_starting_with(s));
    }
    for l in &left {
        let _ = shmproc::unlink(l);
    }
    assert!(
        left.is_empty(),
        "left for good: {left:?} (late list: {made:?}; gc removed {removed:?}, then {removed2:?})"
    );
    assert!(matches!(made, Err(shmproc::OpenError::NotFound(_))), "{made:?}");
}

shmproc::entry! {
    /// Reports its pid, then blocks for good: a queue get and an event wait.
    fn r10_blocked_daemon(args: (shmproc::Queue<u64>, Event, shmproc::Array<u32>)) {
        let (q, ev, out) = args;
        out.set(0, std::process::id()).unwrap();
        let _ = q.get();
        ev.wait();
    }
}

shmproc::entry! {
    /// Starts a daemon child blocked in a queue get, then waits to be killed.
    fn r10_parent_of_daemon(args: (shmproc::Array<u32>, bool)) {
        let (out, fork) = args;
        let method = if fork { shmproc::process::StartMethod::Fork } else { shmproc::process::StartMethod::Spawn };
        let q = shmproc::Queue::<u64>::new(4).unwrap();
        let ev = Event::new().unwrap();
        let mut child =
            Process::new(r10_blocked_daemon, (q.clone(), ev.clone(), out.clone())).with_daemon(true).with_start_method(method);
        child.start().unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let _ = (&q, &ev, &child);
        }
    }
}

/// A daemon child asleep in a queue get whose parent is killed with
/// SIGKILL ends by itself (it watches its parent), both start methods.
#[test]
fn a_daemon_child_asleep_in_a_get_ends_when_its_parent_is_killed() {
    for fork in [false, true] {
        let out = shmproc::Array::from_slice(&[0u32; 1]).unwrap();
        let mut parent = Process::new(r10_parent_of_daemon, (out.clone(), fork));
        parent.start().unwrap();
        wait_until("the daemon to start", || out.get(0).unwrap() != 0);
        let d = out.get(0).unwrap();
        common::wait_until_asleep(d, 1);
        parent.kill().unwrap();
        let _ = common::join(&parent);
        let t = Instant::now();
        while alive(d) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let still = alive(d);
        if still {
            kill9(d);
        }
        // The killed parent's queue and event: a dead creator's, gc's.
        let _ = shmproc::gc();
        let left = shm_starting_with(&format!("anon.{}.", parent.pid().unwrap()));
        for l in &left {
            let _ = shmproc::unlink(l);
        }
        assert!(!still, "fork {fork}: the daemon still runs 5 s after its parent's SIGKILL");
        assert!(left.is_empty(), "gc left {left:?}");
    }
}

shmproc::entry! {
    /// Passes the pipe end it was started with on through a queue, then
    /// stays alive until `done`.
    fn r10_end_forwarder(args: (shmproc::Connection, shmproc::Queue<shmproc::Connection>, Event)) -> Result<(), String> {
        let (end, q, done) = args;
        q.put(end).map_err(|e| format!("put: {e:?}"))?;
        if done.wait_timeout(BOUND) { Ok(()) } else { Err("not told to end".into()) }
    }
}

/// A pipe end handed to a child at its start, which passes it on through a
/// queue to another live process: the end works there (the first child,
/// alive, never used it).
#[test]
fn a_pipe_end_passed_on_by_the_child_it_was_handed_to_works_in_the_next_process() {
    let q = shmproc::Queue::<shmproc::Connection>::new(2).unwrap();
    let done = Event::new().unwrap();
    let (mut a, b) = shmproc::pipe(true).unwrap();
    let mut fwd = Process::new(r10_end_forwarder, (b, q.clone(), done.clone()));
    fwd.start().unwrap();
    let mut user = Process::new(r10_end_by_queue, q.clone());
    user.start().unwrap();
    a.send(&41u64).unwrap();
    let got = a.recv_timeout::<u64>(BOUND);
    done.set();
    let (f, u) = (common::join(&fwd), common::join(&user));
    assert_eq!(got, Ok(42), "the receiver: {u:?}");
    assert!(f.is_ok() && u.is_ok(), "{f:?} {u:?}");
}
