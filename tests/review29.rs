//! Review 29: a full /dev/shm and exhausted resources on every path that
//! creates or grows shared memory. Each test re-runs itself inside a
//! private small tmpfs (`unshare -m`, needs root; skips otherwise).

mod common;

use std::time::Duration;

use shmproc::queue::{ByteQueue, MpmcQueue, SpscQueue};
use shmproc::{
    Array, Barrier, BoundedSemaphore, Condition, DictProxy, Event, JoinableQueue, ListProxy, Lock, Manager, OpenError,
    Queue, RLock, RawSegment, Semaphore, SimpleQueue, Value,
};

const INNER: &str = "SHMPROC_REVIEW29_INNER";
const DEADLINE: Duration = Duration::from_secs(240);

/// Fills /dev/shm with one-page segments only, so that dropping `k` of
/// them leaves exactly `k` pages of room.
fn fill_pages(tag: &str) -> Vec<RawSegment> {
    common::fill_dev_shm(&format!("r29-{tag}"), &[1])
}

type Maker = (&'static str, fn() -> Result<(), String>);

fn e<E: std::fmt::Debug>(x: E) -> String {
    format!("{x:?}")
}

fn makers() -> Vec<Maker> {
    vec![
        ("Lock", || Lock::new().map(drop).map_err(e)),
        ("RLock", || RLock::new().map(drop).map_err(e)),
        ("Semaphore", || Semaphore::new(1).map(drop).map_err(e)),
        ("BoundedSemaphore", || BoundedSemaphore::new(1).map(drop).map_err(e)),
        ("Event", || Event::new().map(drop).map_err(e)),
        ("Condition", || Condition::new().map(drop).map_err(e)),
        ("Barrier", || Barrier::new(2).map(drop).map_err(e)),
        ("Value", || Value::new(1u64).map(drop).map_err(e)),
        ("Array", || Array::<u64>::new(3000).map(drop).map_err(e)),
        ("SpscQueue", || SpscQueue::<u64>::new(4096).map(drop).map_err(e)),
        ("MpmcQueue", || MpmcQueue::<u64>::new(4096).map(drop).map_err(e)),
        ("ByteQueue", || ByteQueue::new(16384, 4096).map(drop).map_err(e)),
        ("Queue bounded", || {
            let q = Queue::<String>::new(64).map_err(e)?;
            q.put("a".into()).map_err(e)?;
            Ok(())
        }),
        ("Queue pod", || Queue::<u64>::new(5000).map(drop).map_err(e)),
        ("Queue unbounded", || {
            let q = Queue::<String>::new(0).map_err(e)?;
            q.put("a".into()).map_err(e)?;
            Ok(())
        }),
        ("JoinableQueue", || JoinableQueue::<String>::new(64).map(drop).map_err(e)),
        ("JoinableQueue unbounded", || JoinableQueue::<String>::new(0).map(drop).map_err(e)),
        ("SimpleQueue", || SimpleQueue::<Vec<u8>>::new(16).map(drop).map_err(e)),
        ("pipe duplex", || shmproc::pipe(true).map(drop).map_err(e)),
        ("pipe simplex", || shmproc::pipe(false).map(drop).map_err(e)),
        ("ListProxy", || {
            let l = ListProxy::<String>::new().map_err(e)?;
            l.append("x".into()).map_err(e)?;
            Ok(())
        }),
        ("DictProxy", || {
            let d = DictProxy::<String, u64>::new().map_err(e)?;
            d.insert("x".into(), 1).map_err(e)?;
            Ok(())
        }),
        ("Manager", || Manager::new().map(drop).map_err(e)),
        ("Manager+list+dict+nested", || {
            let m = Manager::new().map_err(e)?;
            let l = m.list::<u64>("l").map_err(e)?;
            l.append(1).map_err(e)?;
            let d = m.dict::<String, ListProxy<u64>>("d").map_err(e)?;
            let inner = m.list_anon::<u64>().map_err(e)?;
            d.insert("k".into(), inner).map_err(e)?;
            let q = m.queue::<String>("q", 0).map_err(e)?;
            q.put("z".into()).map_err(e)?;
            m.value::<u64>("v", 3).map_err(e)?;
            m.array::<u64>("a", 100).map_err(e)?;
            m.unlink_all().map_err(e)?;
            Ok(())
        }),
    ]
}

/// Every kind, made on a /dev/shm with 0, 1, 2, ... pages of room until
/// it fits: an error (never a panic) and nothing left behind each time it
/// does not fit.
#[test]
fn every_kind_made_with_n_pages_of_room_fails_cleanly_or_works() {
    if !common::rerun_in_tmpfs(
        "every_kind_made_with_n_pages_of_room_fails_cleanly_or_works",
        INNER,
        Some("2m"),
        DEADLINE,
    ) {
        return;
    }
    let mut failures = Vec::new();
    for (what, make) in makers() {
        let mut filler = fill_pages(what.split(' ').next().unwrap());
        let baseline = common::dev_shm_files();
        let mut k = 0;
        loop {
            let freed: Vec<_> = (0..k).filter_map(|_| filler.pop()).collect();
            drop(freed);
            let r = std::panic::catch_unwind(make);
            let after = common::dev_shm_files();
            let lost: Vec<_> = baseline.iter().filter(|f| !after.contains(f)).cloned().collect();
            let left: Vec<_> = after.iter().filter(|f| !baseline.contains(f)).cloned().collect();
            if !left.is_empty() {
                failures.push(format!("{what} with {k} pages free: left {left:?} ({r:?})"));
                for f in &left {
                    let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
                }
            }
            let _ = lost;
            match r {
                Err(_) => failures.push(format!("{what} with {k} pages free: panicked")),
                Ok(Ok(())) => {
                    println!("{what}: fits in {k} pages");
                    break;
                }
                Ok(Err(msg)) => {
                    if !msg.contains("NoSpace") {
                        failures.push(format!("{what} with {k} pages free: {msg}"));
                    }
                }
            }
            // Fill up again (what we freed, and nothing more).
            filler.extend(fill_pages(&format!("{}-{k}", what.split(' ').next().unwrap())));
            k += 1;
            assert!(k < 400, "{what} never fit: {failures:?}");
        }
        drop(filler);
        assert!(common::dev_shm_files().is_empty(), "{what}: {:?}", common::dev_shm_files());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The lowest descriptor number free now: a `RLIMIT_NOFILE` of it leaves
/// no descriptor to open.
fn open_fds() -> u64 {
    use std::os::fd::AsRawFd;
    std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64) {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid resource and a pointer to a writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut r) }, 0);
    r.rlim_cur = soft.min(r.rlim_max);
    // SAFETY: as above; lowering or restoring the soft limit under the hard one.
    assert_eq!(unsafe { libc::setrlimit(resource, &r) }, 0);
}

fn unlimited(resource: libc::__rlimit_resource_t) {
    set_limit(resource, u64::MAX)
}

/// Runs every maker under `limit(n)` for each `n` of `steps`, the limit
/// lifted again before checking: an error (never a panic), nothing left.
fn sweep_limit(resource: libc::__rlimit_resource_t, steps: &[u64], base: impl Fn() -> u64) -> Vec<String> {
    let mut failures = Vec::new();
    for (what, make) in makers() {
        let baseline = common::dev_shm_files();
        let mut errors = std::collections::BTreeSet::new();
        for &n in steps {
            let b = base();
            set_limit(resource, b + n);
            let r = std::panic::catch_unwind(make);
            unlimited(resource);
            let after = common::dev_shm_files();
            let left: Vec<_> = after.iter().filter(|f| !baseline.contains(f)).cloned().collect();
            if !left.is_empty() {
                failures.push(format!("{what} at +{n}: left {left:?} ({r:?})"));
                for f in &left {
                    let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
                }
            }
            match r {
                Err(_) => failures.push(format!("{what} at +{n}: panicked")),
                Ok(Ok(())) => {}
                Ok(Err(msg)) => {
                    errors.insert(msg);
                }
            }
        }
        println!("{what}: {errors:?}");
    }
    failures
}

/// Every kind made with only a few descriptors left (`RLIMIT_NOFILE`):
/// an error or success, never a panic, and nothing left in /dev/shm.
#[test]
fn every_kind_made_with_few_descriptors_left_fails_cleanly() {
    if !common::rerun_in_tmpfs("every_kind_made_with_few_descriptors_left_fails_cleanly", INNER, Some("64m"), DEADLINE)
    {
        return;
    }
    let steps: Vec<u64> = (0..24).collect();
    let failures = sweep_limit(libc::RLIMIT_NOFILE, &steps, open_fds);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every kind made with little address space left (`RLIMIT_AS`): mmap
/// fails; an error, never a panic, nothing left in /dev/shm.
#[test]
fn every_kind_made_with_little_address_space_left_fails_cleanly() {
    if !common::rerun_in_tmpfs(
        "every_kind_made_with_little_address_space_left_fails_cleanly",
        INNER,
        Some("64m"),
        DEADLINE,
    ) {
        return;
    }
    let steps: Vec<u64> = (0..80).map(|i| (i * 16) << 10).collect();
    let failures = sweep_limit(libc::RLIMIT_AS, &steps, common::vm_size);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

shmproc::task! { fn r29_shout(s: String) -> String { s.to_uppercase() } }
shmproc::task! { fn r29_twice(x: u64) -> u64 { x * 2 } }

/// This process's children, started by any of its threads (a Pool's
/// workers are its threads' children).
fn children() -> Vec<u32> {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

fn wait_no_children(what: &str) {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !children().is_empty() {
        assert!(std::time::Instant::now() < until, "{what}: children left {:?}", children());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A Pool (its control, arenas and rings, its workers) made and used
/// with 0, 4, 8, ... pages of room: an error or a working pool, never a
/// panic, a hang, a file or a process left behind.
#[test]
fn a_pool_made_with_n_pages_of_room_fails_cleanly_or_works() {
    if !common::rerun_in_tmpfs("a_pool_made_with_n_pages_of_room_fails_cleanly_or_works", INNER, Some("8m"), DEADLINE) {
        return;
    }
    let mut failures = Vec::new();
    let mut filler = fill_pages("pool");
    let baseline = common::dev_shm_files();
    let mut k = 0;
    loop {
        let freed: Vec<_> = (0..k).filter_map(|_| filler.pop()).collect();
        drop(freed);
        let r = std::panic::catch_unwind(|| -> Result<(), String> {
            let pool = shmproc::Pool::builder().processes(2).maxtasksperchild(3).build().map_err(e)?;
            let v = pool.map(r29_shout, (0..20).map(|i| format!("s{i}"))).map_err(e)?;
            assert_eq!(v, (0..20).map(|i| format!("S{i}")).collect::<Vec<_>>());
            let v = pool.map(r29_twice, 0..5000u64).map_err(e)?;
            assert!(v.iter().enumerate().all(|(i, &x)| x == 2 * i as u64));
            pool.close();
            pool.join().map_err(e)?;
            Ok(())
        });
        wait_no_children(&format!("pool with {k} pages"));
        let after = common::dev_shm_files();
        let left: Vec<_> = after.iter().filter(|f| !baseline.contains(f)).cloned().collect();
        if !left.is_empty() {
            failures.push(format!("pool with {k} pages free: left {left:?} ({r:?})"));
            for f in &left {
                let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
            }
        }
        match r {
            Err(_) => failures.push(format!("pool with {k} pages free: panicked")),
            Ok(Ok(())) => {
                println!("pool: works with {k} pages");
                break;
            }
            Ok(Err(msg)) => println!("pool with {k} pages: {msg}"),
        }
        filler.extend(fill_pages(&format!("pool-{k}")));
        k += 7;
        assert!(k < 2000, "a pool never fit: {failures:?}");
    }
    drop(filler);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The string producer `id` puts as its `i`th item: sizes from a few
/// bytes to 3 KB, so the chain keeps wanting rings with larger frames.
fn item(id: u64, i: u64) -> String {
    format!("{id}:{i}:{}", "x".repeat(((i * 37) % 3000) as usize))
}

shmproc::entry! {
    /// Puts `n` items (`item(id, i)`) into `q`, each with a 60 s deadline.
    fn r29_producer((q, id, n): (Queue<String>, u64, u64)) -> Result<(), String> {
        for i in 0..n {
            q.put_timeout(item(id, i), Duration::from_secs(60)).map_err(|e| format!("put {id}:{i}: {e:?}"))?;
        }
        Ok(())
    }
}

/// Takes items from `q` (at most `limit` of them, until it is empty
/// within `wait`), checking each producer's items come in order.
fn drain(q: &Queue<String>, next: &mut [u64], limit: u64, wait: Duration) -> u64 {
    let mut got = 0;
    while got < limit {
        let Ok(s) = q.get_timeout(wait) else { break };
        let mut parts = s.splitn(3, ':');
        let id: usize = parts.next().unwrap().parse().unwrap();
        let i: u64 = parts.next().unwrap().parse().unwrap();
        assert_eq!(i, next[id], "producer {id}: item {i} came when {} was due", next[id]);
        assert_eq!(s, item(id as u64, i));
        next[id] += 1;
        got += 1;
    }
    got
}

/// Two producer processes fill an unbounded queue while /dev/shm becomes
/// full under them (the parent fills it mid-run) and frees up again:
/// the consumer drains in order throughout, the producers wait (no item
/// lost, none twice), and all of it arrives once there is room.
#[test]
fn an_unbounded_queue_whose_dev_shm_fills_mid_run_loses_nothing_and_recovers() {
    if !common::rerun_in_tmpfs(
        "an_unbounded_queue_whose_dev_shm_fills_mid_run_loses_nothing_and_recovers",
        INNER,
        Some("16m"),
        DEADLINE,
    ) {
        return;
    }
    let n = 20_000u64;
    let q = Queue::<String>::new(0).unwrap();
    let mut kids: Vec<shmproc::Process> = (0..2u64)
        .map(|id| {
            let mut p = shmproc::Process::new(r29_producer, (q.clone(), id, n));
            p.start().unwrap();
            p
        })
        .collect();
    let mut next = vec![0u64; 2];
    drain(&q, &mut next, 500, Duration::from_secs(10));
    let filler = common::fill_dev_shm("r29-mid", &[1 << 20, 1 << 16, 1]);
    // Full now: drain what is in the rings, with the producers stuck or
    // refilling the rings that exist.
    for _ in 0..5 {
        drain(&q, &mut next, 3000, Duration::from_millis(200));
    }
    println!("drained {next:?} while full");
    drop(filler);
    let left = 2 * n - next.iter().sum::<u64>();
    drain(&q, &mut next, left, Duration::from_secs(20));
    assert_eq!(next, vec![n, n], "items lost");
    for p in &mut kids {
        common::join(p).unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    assert!(q.get_nowait().is_err());
    drop(q);
    wait_no_children("producers");
}

shmproc::entry! {
    /// With no descriptor (`RLIMIT_NOFILE`) or no address space
    /// (`RLIMIT_AS`, `resource`) left, gets from `q` (a few rings' worth
    /// of `0..n` waiting in it) until a get fails, after taking `pre` of
    /// them with no limit (1: its first ring is mapped, the next one is
    /// not); then lifts the limit and gets the rest. Err if a get said
    /// `Closed` (the queue is open and full of items) or anything came
    /// out of order.
    fn r29_starved_consumer((q, n, resource, pre): (Queue<u64>, u64, u32, u64)) -> Result<(), String> {
        let mut next = 0u64;
        while next < pre {
            match q.get_timeout(Duration::from_secs(10)) {
                Ok(v) if v == next => next += 1,
                other => return Err(format!("{next} due: {other:?}")),
            }
        }
        let base = if resource == libc::RLIMIT_NOFILE { open_fds() } else { common::vm_size() };
        set_limit(resource, base);
        let mut seen = Vec::new();
        for _ in 0..3 {
            loop {
                match q.get_nowait() {
                    Ok(v) if v == next => next += 1,
                    Ok(v) => return Err(format!("got {v}, {next} was due")),
                    Err(e) => {
                        seen.push(format!("get_nowait after {next}: {e:?}"));
                        break;
                    }
                }
            }
            match q.get_timeout(Duration::from_millis(100)) {
                Ok(v) if v == next => next += 1,
                Ok(v) => return Err(format!("got {v}, {next} was due")),
                Err(e) => seen.push(format!("get_timeout after {next}: {e:?}")),
            }
        }
        match q.put_nowait(u64::MAX) {
            Ok(()) => return Err("a put without descriptors or address space to open the newest ring went in".into()),
            Err(e) => seen.push(format!("put_nowait: {e:?}")),
        }
        unlimited(resource);
        if seen.iter().any(|s| s.contains("Closed")) {
            return Err(format!("an open queue holding {} items said Closed: {seen:?}", n - next));
        }
        while next < n {
            match q.get_timeout(Duration::from_secs(10)) {
                Ok(v) if v == next => next += 1,
                other => return Err(format!("after lifting the limit, {next} due: {other:?}")),
            }
        }
        Ok(())
    }
}

fn starved_consumer(resource: u32) {
    let n = 200_000u64;
    for pre in [1, 0] {
        let q = Queue::<u64>::new(0).unwrap();
        for i in 0..n {
            q.put_nowait(i).unwrap();
        }
        let mut p = shmproc::Process::new(r29_starved_consumer, (q.clone(), n, resource, pre));
        p.start().unwrap();
        common::join(&p).unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert!(q.get_nowait().is_err(), "the consumer left items");
    }
    wait_no_children("consumer");
    assert!(common::dev_shm_files().is_empty(), "{:?}", common::dev_shm_files());
}

/// A consumer process out of descriptors cannot open the unbounded
/// queue's next ring: its get must not say `Closed` (the queue is open
/// and holds items; a consumer loop ends on `Closed` and the items are
/// lost to it), and once descriptors are free it gets them all, in order.
#[test]
fn an_unbounded_queue_consumer_out_of_descriptors_is_not_told_closed() {
    if !common::rerun_in_tmpfs(
        "an_unbounded_queue_consumer_out_of_descriptors_is_not_told_closed",
        INNER,
        Some("256m"),
        DEADLINE,
    ) {
        return;
    }
    starved_consumer(libc::RLIMIT_NOFILE);
}

/// As above, with no address space left to map the next ring (`RLIMIT_AS`).
#[test]
fn an_unbounded_queue_consumer_out_of_address_space_is_not_told_closed() {
    if !common::rerun_in_tmpfs(
        "an_unbounded_queue_consumer_out_of_address_space_is_not_told_closed",
        INNER,
        Some("256m"),
        DEADLINE,
    ) {
        return;
    }
    starved_consumer(libc::RLIMIT_AS);
}

shmproc::entry! {
    /// With no descriptor or address space left (`resource`), after
    /// taking and finishing `pre` of the `n` items in `q`: `join_timeout`
    /// must not say every task is done. Then, the limit lifted, it
    /// finishes the rest (`unfinished_tasks` right, `task_done` accepted).
    fn r29_starved_joiner((q, n, resource, pre): (JoinableQueue<u64>, u64, u32, u64)) -> Result<(), String> {
        for i in 0..pre {
            let v = q.get_timeout(Duration::from_secs(10)).map_err(|e| format!("get {i}: {e:?}"))?;
            if v != i {
                return Err(format!("got {v}, {i} was due"));
            }
            q.task_done().map_err(|e| format!("task_done {i}: {e:?}"))?;
        }
        let base = if resource == libc::RLIMIT_NOFILE { open_fds() } else { common::vm_size() };
        set_limit(resource, base);
        let joined = q.join_timeout(Duration::from_millis(200));
        unlimited(resource);
        if joined {
            return Err(format!("join_timeout said all done with {} of {n} unfinished", n - pre));
        }
        if q.unfinished_tasks() != n - pre {
            return Err(format!("unfinished_tasks said {} with {} unfinished", q.unfinished_tasks(), n - pre));
        }
        for i in pre..n {
            let v = q.get_timeout(Duration::from_secs(10)).map_err(|e| format!("get {i}: {e:?}"))?;
            if v != i {
                return Err(format!("got {v}, {i} was due"));
            }
            q.task_done().map_err(|e| format!("task_done {i}: {e:?}"))?;
        }
        if !q.join_timeout(Duration::from_secs(10)) {
            return Err("join after every task_done timed out".into());
        }
        Ok(())
    }
}

fn starved_joiner(resource: u32) {
    let n = 50_000u64;
    for pre in [1, 0] {
        let q = JoinableQueue::<u64>::new(0).unwrap();
        for i in 0..n {
            q.put_nowait(i).unwrap();
        }
        let mut p = shmproc::Process::new(r29_starved_joiner, (q.clone(), n, resource, pre));
        p.start().unwrap();
        common::join(&p).unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(q.unfinished_tasks(), 0);
    }
    wait_no_children("joiner");
    assert!(common::dev_shm_files().is_empty(), "{:?}", common::dev_shm_files());
}

/// A process out of descriptors cannot map an unbounded JoinableQueue's
/// newer rings: its `join` must not return as if every task were done
/// (Python's `join` returns only when all are), nor `unfinished_tasks`
/// count the rings it could not map as empty.
#[test]
fn an_unbounded_joinable_queue_joiner_out_of_descriptors_does_not_return_early() {
    if !common::rerun_in_tmpfs(
        "an_unbounded_joinable_queue_joiner_out_of_descriptors_does_not_return_early",
        INNER,
        Some("256m"),
        DEADLINE,
    ) {
        return;
    }
    starved_joiner(libc::RLIMIT_NOFILE);
}

/// As above, with no address space left to map the rings (`RLIMIT_AS`).
#[test]
fn an_unbounded_joinable_queue_joiner_out_of_address_space_does_not_return_early() {
    if !common::rerun_in_tmpfs(
        "an_unbounded_joinable_queue_joiner_out_of_address_space_does_not_return_early",
        INNER,
        Some("256m"),
        DEADLINE,
    ) {
        return;
    }
    starved_joiner(libc::RLIMIT_AS);
}

/// Objects made through a Manager with 0, 1, 2, ... pages of room: each
/// failure leaves no record in the registry (a record "being made" by a
/// live process would make every later lookup of the name wait and time
/// out) and no file; with room again, every name is made at once.
#[test]
fn manager_objects_made_with_n_pages_of_room_leave_no_record_behind() {
    if !common::rerun_in_tmpfs(
        "manager_objects_made_with_n_pages_of_room_leave_no_record_behind",
        INNER,
        Some("4m"),
        DEADLINE,
    ) {
        return;
    }
    let mgr = Manager::new().unwrap();
    let mut filler = fill_pages("mgr");
    let mut failed = Vec::new();
    let mut problems = Vec::new();
    for k in 0..60u32 {
        let freed: Vec<_> = (0..k).filter_map(|_| filler.pop()).collect();
        drop(freed);
        let before = common::dev_shm_files();
        let name = format!("obj-{k}-{}", "n".repeat(k as usize * 7 % 180));
        let r = match k % 4 {
            0 => mgr.list::<String>(&name).map(drop),
            1 => mgr.dict::<String, u64>(&name).map(drop),
            2 => mgr.queue::<String>(&name, 0).map(drop),
            _ => mgr.lock(&name).map(drop),
        };
        let listed = mgr.names().unwrap().iter().any(|e| e.name == name);
        match &r {
            Ok(()) => {
                if !listed {
                    problems.push(format!("{name}: made, not listed"));
                }
            }
            Err(e) => {
                if !matches!(e, OpenError::NoSpace { .. }) {
                    problems.push(format!("{name} with {k} pages: {e:?}"));
                }
                if listed {
                    problems.push(format!("{name} with {k} pages: failed ({e}) but listed"));
                }
                let after = common::dev_shm_files();
                let left: Vec<_> = after.iter().filter(|f| !before.contains(f)).collect();
                if !left.is_empty() {
                    problems.push(format!("{name} with {k} pages: left {left:?}"));
                }
                failed.push((k, name));
            }
        }
        filler.extend(fill_pages(&format!("mgr-{k}")));
    }
    drop(filler);
    for (k, name) in &failed {
        let t = std::time::Instant::now();
        let r = match k % 4 {
            0 => mgr.list::<String>(name).map(drop),
            1 => mgr.dict::<String, u64>(name).map(drop),
            2 => mgr.queue::<String>(name, 0).map(drop),
            _ => mgr.lock(name).map(drop),
        };
        if let Err(e) = r {
            problems.push(format!("{name} with room again, after {:?}: {e:?}", t.elapsed()));
        }
    }
    mgr.unlink_all().unwrap();
    drop(mgr);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(common::dev_shm_files().is_empty(), "{:?}", common::dev_shm_files());
}

shmproc::entry! {
    /// Maps `l` and `d`, leaves itself no address space (`RLIMIT_AS`) or
    /// no descriptor (`resource`), sets `ready`, waits for `grown` (the
    /// parent grew both far past what it has mapped), then uses both:
    /// each call an error or a right answer (no crash, no garbage). With
    /// the limit lifted, everything reads as the parent wrote it and
    /// writes go in.
    fn r29_starved_reader((l, d, ready, grown, resource): (ListProxy<u64>, DictProxy<u64, String>, Event, Event, u32)) -> Result<(), String> {
        let n0 = l.len();
        let _ = d.len();
        let base = if resource == libc::RLIMIT_NOFILE { open_fds() } else { common::vm_size() };
        set_limit(resource, base + if resource == libc::RLIMIT_NOFILE { 0 } else { 64 << 10 });
        ready.set();
        let waited = grown.wait_timeout(Duration::from_secs(60));
        let mut seen = Vec::new();
        if waited {
            let len = l.len();
            seen.push(format!("len {len} (was {n0})"));
            seen.push(format!("dict len {}", d.len()));
            match l.get(-1) { Ok(v) => if v + 1 != len as u64 { return Err(format!("last {v}, len {len}")) }, Err(e) => seen.push(format!("get: {e:?}")) }
            match l.to_vec() { Ok(v) => if v.len() != len || v.iter().enumerate().any(|(i, &x)| x != i as u64) { return Err("to_vec garbage".into()) }, Err(e) => seen.push(format!("to_vec: {e:?}")) }
            if let Err(e) = l.append(len as u64) { seen.push(format!("append: {e:?}")) }
            match d.get(&7) { Ok(v) => if v.as_deref() != Some("v7") { return Err(format!("d[7] = {v:?}")) }, Err(e) => seen.push(format!("dict get: {e:?}")) }
            if let Err(e) = d.insert(u64::MAX, "child".into()) { seen.push(format!("dict insert: {e:?}")) }
        }
        unlimited(resource);
        println!("starved reader saw: {seen:?}");
        if !waited {
            return Err("no growth".into());
        }
        // A list of 2 000 000 (or 10) is not empty; a peer's growth this
        // process cannot map is no corruption of the container.
        if seen[0].starts_with("len 0 ") || seen[1] == "dict len 0" || seen.iter().any(|s| s.contains("Corrupted")) {
            return Err(format!("wrong answers without room to map the grown containers: {seen:?}"));
        }
        let len = l.len();
        let v = l.to_vec().map_err(|e| format!("to_vec after: {e:?}"))?;
        if v.len() != len || v.iter().enumerate().any(|(i, &x)| x != i as u64) {
            return Err(format!("after lifting the limit: {} items, not 0..{len}", v.len()));
        }
        l.append(len as u64).map_err(|e| format!("append after: {e:?}"))?;
        if d.get(&7).map_err(|e| format!("{e:?}"))?.as_deref() != Some("v7") {
            return Err("d[7] after".into());
        }
        d.insert(u64::MAX - 1, "child2".into()).map_err(|e| format!("dict insert after: {e:?}"))?;
        Ok(())
    }
}

fn starved_reader(resource: u32) {
    let l = ListProxy::<u64>::new().unwrap();
    let d = DictProxy::<u64, String>::new().unwrap();
    l.extend(0..10).unwrap();
    d.insert(7, "v7".into()).unwrap();
    let (ready, grown) = (Event::new().unwrap(), Event::new().unwrap());
    let mut p =
        shmproc::Process::new(r29_starved_reader, (l.clone(), d.clone(), ready.clone(), grown.clone(), resource));
    p.start().unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(60)));
    l.extend(10..2_000_000).unwrap();
    for i in 0..20_000u64 {
        if i != 7 {
            d.insert(i, format!("v{i}-{}", "y".repeat((i % 50) as usize))).unwrap();
        }
    }
    grown.set();
    common::join(&p).unwrap();
    assert_eq!(p.exitcode(), Some(0));
    let v = l.to_vec().unwrap();
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64), "list garbled");
    assert_eq!(d.get(&(u64::MAX - 1)).unwrap().as_deref(), Some("child2"));
    drop((l, d, ready, grown));
    wait_no_children("reader");
    assert!(common::dev_shm_files().is_empty(), "{:?}", common::dev_shm_files());
}

/// A process that has a list and a dict mapped and then no address space
/// left, while another grows both far past its mapping: its calls fail or
/// answer right (never a crash or garbage), and work once it has room.
#[test]
fn containers_grown_under_a_peer_out_of_address_space_fail_cleanly_there() {
    if !common::rerun_in_tmpfs(
        "containers_grown_under_a_peer_out_of_address_space_fail_cleanly_there",
        INNER,
        Some("256m"),
        DEADLINE,
    ) {
        return;
    }
    starved_reader(libc::RLIMIT_AS);
}

/// As above, with no descriptor left.
#[test]
fn containers_grown_under_a_peer_out_of_descriptors_fail_cleanly_there() {
    if !common::rerun_in_tmpfs(
        "containers_grown_under_a_peer_out_of_descriptors_fail_cleanly_there",
        INNER,
        Some("256m"),
        DEADLINE,
    ) {
        return;
    }
    starved_reader(libc::RLIMIT_NOFILE);
}

shmproc::task! { fn r29_pid(_x: u64) -> u32 { std::process::id() } }

/// A Pool whose parent has no descriptor (`RLIMIT_NOFILE`) or little
/// address space (`RLIMIT_AS`) left when a worker is killed: the map in
/// flight, and the next ones, end (results or an error) instead of
/// hanging or panicking; once the limit is lifted the pool maps again,
/// and it ends leaving no process and no file.
fn pool_starved(resource: u32) {
    let pool = std::sync::Arc::new(shmproc::Pool::builder().processes(2).build().unwrap());
    let pids = pool.map(r29_pid, 0..64u64).unwrap();
    let victim = pids[0];
    // The thread that maps is started before the limit (a thread's stack
    // is address space too).
    let (go, started) = std::sync::mpsc::channel::<()>();
    let (tx, rx) = std::sync::mpsc::channel();
    let p = pool.clone();
    std::thread::spawn(move || {
        if started.recv().is_ok() {
            let r: Vec<_> =
                (0..3).map(|_| p.map(r29_twice, 0..20_000u64).map(|v| v.len()).map_err(|e| e.to_string())).collect();
            let _ = tx.send(r);
        }
    });
    let base = if resource == libc::RLIMIT_NOFILE { open_fds() } else { common::vm_size() };
    set_limit(resource, base + if resource == libc::RLIMIT_NOFILE { 0 } else { 4 << 20 });
    // SAFETY: kill(2) of a worker of ours, by pid.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    // Dead (a zombie, or reaped) before the maps start.
    common::wait_for("the killed worker to die", || {
        std::fs::read_to_string(format!("/proc/{victim}/stat"))
            .map_or(true, |st| st.rsplit(')').next().is_some_and(|t| t.trim_start().starts_with('Z')))
    });
    go.send(()).unwrap();
    let r = rx.recv_timeout(Duration::from_secs(60)).ok();
    unlimited(resource);
    println!("maps with the limit: {r:?}; workers now {:?}", children());
    assert!(r.is_some(), "maps hung with the limit set");
    let p = pool.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(p.map(r29_twice, 0..2000u64).map_err(|e| e.to_string())));
    let after = rx.recv_timeout(Duration::from_secs(60)).ok();
    println!("map after: {:?}", after.as_ref().map(|r| r.as_ref().map(|v| v.len())));
    let after = after.expect("a map hung after the limit was lifted");
    assert_eq!(after.unwrap(), (0..2000u64).map(|x| x * 2).collect::<Vec<_>>());
    pool.terminate();
    pool.join().unwrap();
    drop(pool);
    wait_no_children("pool");
    assert!(common::dev_shm_files().is_empty(), "{:?}", common::dev_shm_files());
}

#[test]
fn a_pool_losing_a_worker_with_no_descriptors_left_does_not_hang() {
    if !common::rerun_in_tmpfs(
        "a_pool_losing_a_worker_with_no_descriptors_left_does_not_hang",
        INNER,
        Some("256m"),
        DEADLINE,
    ) {
        return;
    }
    pool_starved(libc::RLIMIT_NOFILE);
}

#[test]
fn a_pool_losing_a_worker_with_no_address_space_left_does_not_hang() {
    if !common::rerun_in_tmpfs(
        "a_pool_losing_a_worker_with_no_address_space_left_does_not_hang",
        INNER,
        Some("256m"),
        DEADLINE,
    ) {
        return;
    }
    pool_starved(libc::RLIMIT_AS);
}
