//! Review 29: no file descriptor (`RLIMIT_NOFILE`) or address space
//! (`RLIMIT_AS`) left, set with `setrlimit` in a child, on the paths that
//! create, open or map shared memory (a full /dev/shm: `review29.rs`).
//! Each test re-runs itself inside a private tmpfs (`unshare -m`, needs
//! root; skips otherwise).

mod common;
#[path = "review29_shared/mod.rs"]
mod shared;

use std::time::Duration;

use shmproc::{DictProxy, Event, JoinableQueue, ListProxy, Queue};

use shared::*;

const INNER: &str = "SHMPROC_REVIEW29_INNER";
const DEADLINE: Duration = Duration::from_secs(240);

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

shmproc::entry! {
    /// With no descriptor (`RLIMIT_NOFILE`) or no address space
    /// (`RLIMIT_AS`, `resource`) left, gets from `q` (a few rings' worth
    /// of `0..n` waiting in it) until a get fails, after taking `pre` of
    /// them with no limit (1: its first ring is mapped, the next one is
    /// not); then lifts the limit and gets the rest. Err if a get said
    /// `Closed` (the queue is open and full of items) or anything came
    /// out of order, or `empty()` said true.
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
        if q.empty() {
            seen.push(format!("empty() with {} items in the queue", n - next));
        }
        match q.put_nowait(u64::MAX) {
            Ok(()) => return Err("a put without descriptors or address space to open the newest ring went in".into()),
            Err(e) => seen.push(format!("put_nowait: {e:?}")),
        }
        unlimited(resource);
        if seen.iter().any(|s| s.contains("Closed") || s.starts_with("empty()")) {
            return Err(format!("an open queue holding {} items said Closed or empty: {seen:?}", n - next));
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
