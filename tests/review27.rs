//! Review 27: segment lifetime. `gc()` against creators killed at random
//! points of making every kind of object, persisted objects, PID reuse,
//! and names shared between processes. Every blocking step has a
//! deadline; the tests that look at the whole of /dev/shm run in a
//! private tmpfs (`common::rerun_in_tmpfs`).

mod common;

use std::time::Duration;

use shmproc::queue::ByteQueue;
use shmproc::{Array, DictProxy, Event, ListProxy, Lock, Manager, Process, Queue, Value};

const INNER: &str = "SHMPROC_REVIEW27_INNER";

/// Makes (and drops) one object of `kind`, with some use, as a program
/// would; `persist_as`: also leave a persisted object of that name.
fn make(kind: &str, round: u64) {
    match kind {
        "lock" => {
            let l = Lock::new().unwrap();
            drop(l.lock());
        }
        "value" => {
            let v = Value::new(round).unwrap();
            v.set(round + 1).unwrap();
            let a = Array::<u64>::new(5000).unwrap();
            a.set(3, round).unwrap();
        }
        "queue" => {
            let q = Queue::<u64>::new(8).unwrap();
            q.put(round).unwrap();
            let s = Queue::<String>::new(8).unwrap();
            s.put(format!("{round}")).unwrap();
        }
        "unbounded" => {
            // Enough items to chain several rings.
            let q = Queue::<String>::new(0).unwrap();
            for i in 0..3000 {
                q.put(format!("item {i} of round {round} {}", "x".repeat(100))).unwrap();
            }
            for _ in 0..1000 {
                q.get().unwrap();
            }
        }
        "bytes" => {
            let q = ByteQueue::new(4096, 512).unwrap();
            let mut p = q.producer().unwrap();
            p.try_send(b"hello").unwrap();
            let (mut a, mut b) = shmproc::pipe(true).unwrap();
            a.send(&round).unwrap();
            let _: u64 = b.recv().unwrap();
        }
        "manager" => {
            let m = Manager::new().unwrap();
            m.list::<u64>("l").unwrap().append(round).unwrap();
            m.dict::<String, String>("d").unwrap().insert("k".into(), "v".into()).unwrap();
            let outer = m.list::<ListProxy<u64>>("outer").unwrap();
            let inner = m.list_anon::<u64>().unwrap();
            inner.append(1).unwrap();
            outer.append(inner).unwrap();
            let dd = m.dict::<String, DictProxy<String, u64>>("dd").unwrap();
            dd.insert("x".into(), m.dict_anon::<String, u64>().unwrap()).unwrap();
            m.queue::<String>("q", 0).unwrap().put("a".into()).unwrap();
            m.queue::<u64>("bq", 4).unwrap().put(1).unwrap();
            m.lock("lk").unwrap();
            m.value("v", 1u64).unwrap();
        }
        "pool" => {
            let p = shmproc::Pool::new(1).unwrap();
            let v: Vec<u64> = p.map(double, 0..2000u64).unwrap();
            assert_eq!(v.len(), 2000);
        }
        k => panic!("unknown kind {k}"),
    }
}

shmproc::task! { fn double(x: u64) -> u64 { x * 2 } }

shmproc::entry! {
    /// Makes objects of `kind` over and over until killed.
    fn churn((kind, started): (String, Event)) {
        let mut round = 0;
        loop {
            make(&kind, round);
            if round == 0 {
                started.set();
            }
            round += 1;
        }
    }
}

/// The files in /dev/shm other than `keep`, with their size and whether
/// their first 8 bytes are our magic.
fn leftovers(keep: &[&str]) -> Vec<(String, u64, bool)> {
    common::dev_shm_files()
        .into_iter()
        .filter(|f| !keep.iter().any(|k| f.ends_with(k)))
        .map(|f| {
            let bytes = std::fs::read(format!("/dev/shm/{f}")).unwrap_or_default();
            let magic = bytes.len() >= 8 && &bytes[..8] == b"SHMPROC\x01";
            (f, bytes.len() as u64, magic)
        })
        .collect()
}

fn kill_while_making(kind: &str, rounds: u64, max_ms: u64) {
    let started = Event::new().unwrap();
    let keep = [started.name().to_owned()];
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    for r in 0..rounds {
        started.clear();
        let mut p = Process::new(churn, (kind.to_owned(), started.clone()));
        common::crash::start(&mut p, &started);
        common::crash::kill_within(&p, max_ms);
        // Pool workers and other children leave when their owner dies.
        std::thread::sleep(Duration::from_millis(if kind == "pool" { 300 } else { 5 }));
        let removed = shmproc::gc().unwrap();
        let left = leftovers(&keep);
        // Before, a creator killed before it wrote its header left a file of
        // at most a page with no header (23 of 40 kills of a Lock maker).
        let (small, bad): (Vec<_>, Vec<_>) = left.into_iter().partition(|(_, len, magic)| !magic && *len <= 4096);
        for (f, _, _) in &small {
            let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
        }
        assert!(bad.is_empty(), "{kind} round {r}: gc removed {removed:?} and left {bad:?}");
        assert!(small.is_empty(), "{kind} round {r}: gc removed {removed:?} and left the headerless {small:?}");
    }
}

macro_rules! matrix {
    ($($test:ident: $kind:literal, $rounds:expr, $ms:expr;)*) => {$(
        #[test]
        fn $test() {
            if !common::rerun_in_tmpfs(stringify!($test), INNER, Some("1g"), Duration::from_secs(300)) {
                return;
            }
            kill_while_making($kind, $rounds, $ms);
        }
    )*};
}

matrix! {
    a_lock_creator_killed_anywhere_leaves_nothing_after_gc: "lock", common::count(40, 400), 3;
    a_value_creator_killed_anywhere_leaves_nothing_after_gc: "value", common::count(40, 400), 3;
    a_queue_creator_killed_anywhere_leaves_nothing_after_gc: "queue", common::count(40, 400), 3;
    an_unbounded_queue_creator_killed_anywhere_leaves_nothing_after_gc: "unbounded", common::count(40, 400), 20;
    a_byte_queue_or_pipe_creator_killed_anywhere_leaves_nothing_after_gc: "bytes", common::count(40, 400), 3;
    a_manager_creator_killed_anywhere_leaves_nothing_after_gc: "manager", common::count(40, 400), 10;
    a_pool_owner_killed_anywhere_leaves_nothing_after_gc: "pool", common::count(15, 60), 60;
}

shmproc::entry! {
    /// Creates the Lock `name` and drops it (removing the name) over and
    /// over until killed, as a program taking a named lock per job would.
    fn churn_named((name, started): (String, Event)) {
        let mut first = true;
        loop {
            drop(Lock::create(&name).unwrap());
            if std::mem::take(&mut first) {
                started.set();
            }
        }
    }
}

/// A process killed while it creates a named object: once `gc()` ran, the
/// name is free again (its creator is dead and it was not persisted), so
/// the next `create` of it succeeds. Before, a kill in the window between
/// the file's creation and the header naming its creator (most of a small
/// object's creation: 23 of 40 kills of a Lock-making loop) left a
/// headerless file that `gc` could not judge, and the name was taken for
/// good: `create` said `AlreadyExists`, `open` and `open_or_create`
/// `InitTimeout`, until somebody unlinked it by hand.
#[test]
fn a_name_whose_creator_was_killed_while_creating_it_is_free_after_gc() {
    let started = Event::new().unwrap();
    let name = common::name("r27-named");
    for round in 0..40 {
        started.clear();
        let mut p = Process::new(churn_named, (name.clone(), started.clone()));
        common::crash::start(&mut p, &started);
        common::crash::kill_within(&p, 2);
        let removed = shmproc::gc().unwrap();
        let size = std::fs::metadata(format!("/dev/shm/shmproc.{name}")).map(|m| m.len()).ok();
        let again = Lock::create(&name);
        if again.is_err() {
            let _ = shmproc::unlink(&name);
        }
        assert!(
            again.is_ok(),
            "round {round}: the name of a creator killed mid-create is still taken after gc \
             (gc removed {removed:?}; file of {size:?} bytes): {:?}",
            again.err()
        );
    }
}
shmproc::entry! {
    /// Makes the persisted unbounded queue `name` with several rings,
    /// then removes it with `shmproc::unlink`, over and over until killed.
    fn churn_unlink((name, started): (String, Event)) {
        let mut first = true;
        loop {
            let q = Queue::<u64>::create(&name, 0).unwrap();
            q.persist();
            for i in 0..20_000 {
                q.put(i).unwrap();
            }
            drop(q);
            shmproc::unlink(&name).unwrap();
            if std::mem::take(&mut first) {
                started.set();
            }
        }
    }
}

/// A process killed while `shmproc::unlink` removes a (persisted)
/// unbounded queue leaves nothing that `gc()` cannot remove. Before, the
/// queue's name went first and its rings after: a kill in between left
/// the rings (persisted, like every ring) with no queue to lead `gc` to
/// them, in /dev/shm for good. (Seen first as a Manager's queue ring left
/// when the Manager's creator was killed while its drop removed the
/// Manager's objects.) /dev/shm holds many other files, as a busy
/// machine's does: listing it is the slow step between the two removals.
#[test]
fn a_process_killed_while_unlinking_an_unbounded_queue_leaves_no_ring() {
    if !common::rerun_in_tmpfs(
        "a_process_killed_while_unlinking_an_unbounded_queue_leaves_no_ring",
        INNER,
        Some("1g"),
        Duration::from_secs(300),
    ) {
        return;
    }
    for i in 0..3000 {
        std::fs::write(format!("/dev/shm/other-program-{i}"), b"x").unwrap();
    }
    let started = Event::new().unwrap();
    let name = common::name("r27-unlink");
    for round in 0..60 {
        started.clear();
        let mut p = Process::new(churn_unlink, (name.clone(), started.clone()));
        common::crash::start(&mut p, &started);
        common::crash::kill_within(&p, 10);
        let removed = shmproc::gc().unwrap();
        // The queue itself may be left complete (persisted): the user
        // removes it, rings and all.
        let _ = shmproc::unlink(&name);
        let left = common::crash::segments_named(&name);
        assert!(left.is_empty(), "round {round}: gc removed {removed:?} and left {left:?}");
    }
    for i in 0..3000 {
        std::fs::remove_file(format!("/dev/shm/other-program-{i}")).unwrap();
    }
}

shmproc::entry! {
    /// Opens the unbounded queue and the lock named in `names` and
    /// persists them: they are to outlive every process.
    fn persist_opened((queue, lock): (String, String)) {
        Queue::<u64>::open(&queue).unwrap().persist();
        Lock::open(&lock).unwrap().persist();
    }
}

/// `persist()` called by a process that opened an object (not its
/// creator) keeps it after the creator's last handle drops, as it does
/// for a Manager ("any process may call it") and as the header's
/// persist flag, which `gc` honours, says; and the object can then be
/// opened and removed with `unlink`. Before, the creator's drop removed
/// the name anyway (but `gc` kept it had the creator been killed), and an
/// unbounded queue lost its name while its rings, persisted, stayed in
/// /dev/shm with nothing to lead `unlink` or `gc` to them.
#[test]
fn an_object_persisted_by_a_process_that_opened_it_outlives_its_creator() {
    let queue = common::name("r27-persist-q");
    let lock = common::name("r27-persist-l");
    let q = Queue::<u64>::create(&queue, 0).unwrap();
    for i in 0..5000 {
        q.put(i).unwrap();
    }
    let l = Lock::create(&lock).unwrap();
    let mut p = Process::new(persist_opened, (queue.clone(), lock.clone()));
    p.start().unwrap();
    common::join(&p).unwrap();
    drop((q, l));
    let left = common::crash::segments_named(&queue);
    let reopened = Queue::<u64>::open(&queue).map(|q| q.get_timeout(Duration::ZERO));
    let lock_kept = Lock::open(&lock).is_ok();
    let _ = shmproc::unlink(&lock);
    let unlinked = shmproc::unlink(&queue);
    let after = common::crash::segments_named(&queue);
    for f in &after {
        let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
    }
    assert!(
        matches!(reopened, Ok(Ok(0))),
        "the queue a child persisted cannot be used after its creator's drop ({reopened:?}); left in /dev/shm: {left:?}"
    );
    assert!(lock_kept, "the lock a child persisted was removed by its creator's drop");
    assert!(unlinked.is_ok(), "{unlinked:?}");
    assert!(after.is_empty(), "unlink(queue) left {after:?}");
}
shmproc::entry! {
    /// On `go`: `open_or_create`s the Value `name` with its own pid as the
    /// initial value and the 32 MiB Array `name.big`, records what the
    /// value held and the array's length in `seen[slot]`, and holds both
    /// until `done` (so no creator leaves, and removes a name, before
    /// every racer opened it).
    fn race_open_or_create((name, slot, seen, go, done): (String, u64, Array<u64>, Event, Event)) {
        assert!(go.wait_timeout(common::DEADLINE));
        let v = Value::<u64>::open_or_create(&name, u64::from(std::process::id())).unwrap();
        let a = Array::<u64>::open_or_create(&format!("{name}.big"), 4 << 20).unwrap();
        a.set((4 << 20) - 1, 1).unwrap();
        seen.set(2 * slot as usize, v.get().unwrap()).unwrap();
        seen.set(2 * slot as usize + 1, a.len() as u64).unwrap();
        assert!(done.wait_timeout(common::DEADLINE));
    }
}

/// Processes racing `open_or_create` on one name: exactly one creates it
/// (every racer reads the same initial value, one of theirs), and the
/// others open the complete object (a large one too: its full length,
/// whatever moment of its creation the open fell on).
#[test]
fn processes_racing_open_or_create_get_one_complete_object() {
    const N: u64 = 4;
    for round in 0..15 {
        let name = format!("{}-{round}", common::name("r27-race"));
        let seen = Array::<u64>::new(2 * N).unwrap();
        let (go, done) = (Event::new().unwrap(), Event::new().unwrap());
        let mut ps: Vec<Process> = (0..N)
            .map(|i| Process::new(race_open_or_create, (name.clone(), i, seen.clone(), go.clone(), done.clone())))
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        go.set();
        common::wait_for("every racer's report", || (0..2 * N as usize).all(|i| seen.get(i).unwrap() != 0));
        done.set();
        let pids: Vec<u64> = ps.iter().map(|p| u64::from(p.pid().unwrap())).collect();
        for p in &ps {
            common::join(p).unwrap();
        }
        let values: Vec<u64> = (0..N as usize).map(|i| seen.get(2 * i).unwrap()).collect();
        let lens: Vec<u64> = (0..N as usize).map(|i| seen.get(2 * i + 1).unwrap()).collect();
        assert!(
            values.iter().all(|v| *v == values[0]) && pids.contains(&values[0]),
            "round {round}: {values:?} (racers {pids:?})"
        );
        assert!(lens.iter().all(|l| *l == 4 << 20), "round {round}: lengths {lens:?}");
        assert!(
            common::crash::segments_named(&name).is_empty(),
            "round {round}: left {:?}",
            common::crash::segments_named(&name)
        );
    }
}

/// A name taken by one kind of object is refused to every other kind, by
/// `create`, `open` and `open_or_create` alike, and the object is intact.
#[test]
fn a_name_of_one_kind_is_refused_to_another() {
    let name = common::name("r27-kind");
    let lock = Lock::create(&name).unwrap();
    assert!(matches!(Value::<u64>::create(&name, 1), Err(shmproc::OpenError::AlreadyExists(_))));
    assert!(matches!(Value::<u64>::open(&name), Err(shmproc::OpenError::WrongKind { .. })));
    assert!(matches!(Value::<u64>::open_or_create(&name, 1), Err(shmproc::OpenError::WrongKind { .. })));
    assert!(matches!(Queue::<u64>::open_or_create(&name, 0), Err(shmproc::OpenError::WrongKind { .. })));
    assert!(matches!(Manager::open(&name), Err(shmproc::OpenError::WrongKind { .. })));
    assert!(matches!(ListProxy::<u64>::open(&name), Err(shmproc::OpenError::WrongKind { .. })));
    drop(lock.lock().unwrap());
    drop(lock);
    assert!(common::crash::segments_named(&name).is_empty());
}

shmproc::entry! {
    /// Creates the Lock `name` and leaves without dropping it.
    fn leave_a_dead_lock(name: String) {
        let l = Lock::create(&name).unwrap();
        std::mem::forget(l);
        std::process::exit(0);
    }
}

/// `gc()` removes a dead creator's segment and nothing else among
/// symlinks (to it, to a file of ours, named as a segment being made),
/// a directory, a FIFO and a foreign file under our prefix; it never
/// follows a symlink.
#[test]
fn gc_never_follows_a_symlink_nor_removes_what_is_not_a_dead_segment() {
    if !common::rerun_in_tmpfs(
        "gc_never_follows_a_symlink_nor_removes_what_is_not_a_dead_segment",
        INNER,
        Some("64m"),
        Duration::from_secs(60),
    ) {
        return;
    }
    let name = common::name("r27-dead");
    let mut p = Process::new(leave_a_dead_lock, name.clone());
    p.start().unwrap();
    common::join(&p).unwrap();
    let target = std::env::temp_dir().join(format!("r27-target-{}", std::process::id()));
    std::fs::write(&target, [0u8; 100]).unwrap();
    let shm = |n: &str| format!("/dev/shm/shmproc.{n}");
    std::os::unix::fs::symlink(shm(&name), shm("link-to-dead")).unwrap();
    std::os::unix::fs::symlink(&target, shm(".making.1.1.0")).unwrap();
    std::os::unix::fs::symlink(&target, shm("link-to-file")).unwrap();
    std::fs::create_dir(shm("dir")).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo has no other preconditions.
    assert_eq!(unsafe { libc::mkfifo(c"/dev/shm/shmproc.fifo".as_ptr(), 0o600) }, 0);
    std::fs::write(shm("foreign"), b"SHMPROC\x01 but not one of ours, and short").unwrap();
    let removed = shmproc::gc().unwrap();
    let left = common::dev_shm_files();
    let target_kept = std::fs::read(&target).map(|b| b.len()).ok();
    let _ = std::fs::remove_file(&target);
    assert_eq!(removed, std::slice::from_ref(&name));
    assert_eq!(
        left,
        [
            "shmproc..making.1.1.0",
            "shmproc.dir",
            "shmproc.fifo",
            "shmproc.foreign",
            "shmproc.link-to-dead",
            "shmproc.link-to-file"
        ]
    );
    assert_eq!(target_kept, Some(100));
}

shmproc::entry! {
    /// Creates objects (named and not, small and of several MiB, an
    /// unbounded queue, a Manager's list) over and over, checking each one
    /// can be opened by its name once made; sets `started` after the
    /// first round and ends after `rounds`.
    fn create_while_gc_runs((rounds, started): (u64, Event)) {
        for round in 0..rounds {
            let name = format!("r27-live-{}-{round}", std::process::id());
            let l = Lock::create(&name).unwrap();
            assert!(Lock::open(&name).is_ok(), "round {round}: the lock {name} is gone");
            let raw = shmproc::RawSegment::new(8 << 20).unwrap();
            assert!(shmproc::RawSegment::open(raw.name()).is_ok(), "round {round}: {} is gone", raw.name());
            let q = Queue::<u64>::new(0).unwrap();
            q.put(round).unwrap();
            assert_eq!(Queue::<u64>::open(q.name()).unwrap().get().unwrap(), round);
            let m = Manager::new().unwrap();
            m.list::<u64>("l").unwrap().append(round).unwrap();
            assert_eq!(Manager::open(m.name()).unwrap().list::<u64>("l").unwrap().len(), 1);
            drop((l, raw, q, m));
            if round == 0 {
                started.set();
            }
        }
    }
}

/// `gc()` run over and over while a live process creates objects of
/// every kind never removes one of them (whatever step of its creation
/// each gc meets: the name being made, the header being written, the
/// pages being reserved, the rings being linked).
#[test]
fn gc_never_removes_what_a_live_process_is_creating() {
    if !common::rerun_in_tmpfs(
        "gc_never_removes_what_a_live_process_is_creating",
        INNER,
        Some("1g"),
        Duration::from_secs(120),
    ) {
        return;
    }
    let started = Event::new().unwrap();
    let mut p = Process::new(create_while_gc_runs, (common::count(150, 1500), started.clone()));
    common::crash::start(&mut p, &started);
    let child = p.pid().unwrap();
    let mut removed = Vec::new();
    while p.exitcode().is_none() {
        removed.extend(shmproc::gc().unwrap());
    }
    common::join(&p).unwrap();
    // Nothing here has a dead creator: whatever gc removed was the live creator's.
    assert!(removed.is_empty(), "gc removed objects of the live creator {child}: {removed:?}");
    assert_eq!(common::dev_shm_files(), [format!("shmproc.{}", started.name())]);
}

/// `shmproc::unlink(name)` of a (persisted) Manager removes what the
/// Manager holds with it, as `Manager::unlink_all` does and as `unlink`
/// of an unbounded queue removes its rings: the objects are persisted
/// (they live as long as the registry lists them), so with the registry
/// gone nothing, `gc` included, would ever remove them.
#[test]
fn unlink_of_a_persisted_manager_removes_what_it_holds() {
    let name = common::name("r27-mgr-unlink");
    let mgr = Manager::create(&name).unwrap();
    mgr.list::<u64>("l").unwrap().append(1).unwrap();
    mgr.queue::<String>("q", 0).unwrap().put("x".into()).unwrap();
    mgr.lock("k").unwrap();
    let segments: Vec<String> = mgr.names().unwrap().into_iter().map(|e| e.segment).collect();
    mgr.persist();
    drop(mgr);
    shmproc::unlink(&name).unwrap();
    let mut left: Vec<String> = Vec::new();
    for s in &segments {
        left.extend(common::crash::segments_named(s));
    }
    for s in &segments {
        let _ = shmproc::unlink(s);
    }
    assert!(left.is_empty(), "unlink of the Manager left what it held: {left:?}");
}

/// This process's start time in clock ticks (field 22 of /proc/self/stat).
fn my_start_time() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(19).unwrap().parse().unwrap()
}

/// Temporary names this process would make a segment under, already
/// taken (as a process that `exec`s itself, keeping its pid and start
/// time, can leave them: its numbering starts again), never make a
/// `create` fail, let alone as "the name is taken".
#[test]
fn temporary_names_already_taken_do_not_fail_a_create() {
    if !common::rerun_in_tmpfs(
        "temporary_names_already_taken_do_not_fail_a_create",
        INNER,
        Some("64m"),
        Duration::from_secs(60),
    ) {
        return;
    }
    let (pid, start) = (std::process::id(), my_start_time());
    let taken: Vec<String> = (0..40).map(|n| format!("/dev/shm/shmproc..making.{pid}.{start}.{n}")).collect();
    for t in &taken {
        std::fs::write(t, []).unwrap();
    }
    let made = Lock::create(&common::name("r27-after-taken"));
    for t in &taken {
        let _ = std::fs::remove_file(t);
    }
    assert!(made.is_ok(), "{:?}", made.err());
}
