//! kill -9 at random points in the operations the older crash tests left
//! out: MPMC batch forms (`push_slice`, `pop_into`), SPSC batch forms and
//! loans (and taking a dead end's role over), the facade's
//! `JoinableQueue` counts (`put` / `get` / `task_done` / `join`),
//! `SimpleQueue`, `Pipe` values, and sleepers of the sync family killed in
//! their wait. Each test: a child killed at a random instant, then the
//! invariants checked (nothing lost or duplicated beyond the dead
//! process's own items, exact counts, no hang). Every wait has a deadline.

mod common;

use std::time::{Duration, Instant};

use shmproc::queue::{MpmcQueue, SpscQueue};
use shmproc::{Event, JoinableQueue, LockError, Process, SimpleQueue, Value};
use shmproc::{GetTimeoutError, PopTimeoutError};

const T: Duration = Duration::from_secs(30);
const BATCH: usize = 8;

/// A small pseudo-random number (differs per call and per run).
fn rand_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() % n.max(1)
}

/// Kills `p` after a random 0..`max_ms` ms.
fn kill_at_random(p: &Process, max_ms: u64) {
    std::thread::sleep(Duration::from_micros(rand_below(max_ms * 1000)));
    p.kill().unwrap();
    let _ = common::join(p);
}

/// A thread that SIGKILLs process `pid` after a random 0..`max_ms` ms
/// (the caller joins the process afterwards).
fn killer(p: &Process, max_ms: u64) -> std::thread::JoinHandle<()> {
    let pid = p.pid().expect("started") as libc::pid_t;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_micros(rand_below(max_ms * 1000)));
        // SAFETY: kill has no memory preconditions; `pid` is our unreaped child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    })
}

// ---- MPMC batch forms ----

shmproc::entry! {
    /// Pushes (tag << 32 | i) for i in 0..n with push_slice batches.
    fn mpmc_push_batches(args: (MpmcQueue<u64>, u64, u64, Event)) -> Result<(), String> {
        let (q, tag, n, started) = args;
        started.set();
        let mut i = 0;
        while i < n {
            let batch: Vec<u64> = (i..(i + BATCH as u64).min(n)).map(|k| (tag << 32) | k).collect();
            let k = q.push_slice(&batch) as u64;
            if k == 0 {
                std::thread::yield_now();
            }
            i += k;
        }
        Ok(())
    }
}

/// A push_slice producer killed at a random point: the survivor's items
/// all arrive once, in order; the victim's are a hole-free prefix; the
/// ring is neither wedged nor miscounted afterwards.
#[test]
fn mpmc_push_slice_producer_killed_mid_batch_loses_nothing_of_the_others() {
    const N: u64 = 20_000;
    for _round in 0..4 {
        let q = MpmcQueue::<u64>::new(16).unwrap();
        let started = Event::new().unwrap();
        let mut victim =
            Process::new(mpmc_push_batches, (q.clone(), 1u64, u64::MAX >> 33, started.clone())).with_daemon(true);
        let mut survivor = Process::new(mpmc_push_batches, (q.clone(), 0u64, N, Event::new().unwrap()));
        victim.start().unwrap();
        survivor.start().unwrap();
        assert!(started.wait_timeout(T));
        let killer = killer(&victim, 30);
        let mut next = [0u64; 2];
        let end = Instant::now() + T;
        let mut buf = [0u64; BATCH];
        while next[0] < N {
            assert!(Instant::now() < end, "stuck at {next:?}");
            let k = q.pop_into(&mut buf);
            let got: Vec<u64> = if k == 0 {
                match q.pop_timeout(Duration::from_millis(50)) {
                    Ok(v) => vec![v],
                    Err(GetTimeoutError::TimedOut) => continue,
                    Err(e) => panic!("{e}"),
                }
            } else {
                buf[..k].to_vec()
            };
            for v in got {
                let (tag, i) = ((v >> 32) as usize, v & 0xFFFF_FFFF);
                assert!(tag < 2, "garbage {v:#x}");
                assert_eq!(i, next[tag], "producer {tag}: hole or duplicate");
                next[tag] += 1;
            }
        }
        killer.join().unwrap();
        let _ = common::join(&victim);
        common::join(&survivor).unwrap();
        while let Ok(v) = q.try_pop() {
            assert_eq!(v, (1 << 32) | next[1], "victim: hole or duplicate");
            next[1] += 1;
        }
        assert_eq!(q.len(), 0);
        for i in 0..16 {
            q.try_push(i).unwrap_or_else(|e| panic!("ring wedged after the kill: push {i}: {e}"));
        }
        assert!(q.is_full());
    }
}

shmproc::entry! {
    /// Pops with pop_into until killed, recording how many it got.
    fn mpmc_pop_batches(args: (MpmcQueue<u64>, Value<u64>, Event)) -> Result<(), String> {
        let (q, got, started) = args;
        started.set();
        let mut n = 0u64;
        let mut buf = [0u64; BATCH];
        loop {
            let k = q.pop_into(&mut buf) as u64;
            if k == 0 {
                std::thread::yield_now();
                continue;
            }
            n += k;
            got.set(n).map_err(|e| e.to_string())?;
        }
    }
}

/// A pop_into consumer killed at a random point: the producer is not
/// stalled by it, the survivor gets every other item once and in order,
/// and at most the victim's last batch is unaccounted for.
#[test]
fn mpmc_pop_into_consumer_killed_mid_batch_loses_at_most_its_own_batch() {
    const N: u64 = 20_000;
    for _round in 0..4 {
        let q = MpmcQueue::<u64>::new(16).unwrap();
        let got = Value::new(0u64).unwrap();
        let started = Event::new().unwrap();
        let mut victim = Process::new(mpmc_pop_batches, (q.clone(), got.clone(), started.clone())).with_daemon(true);
        let mut producer = Process::new(mpmc_push_batches, (q.clone(), 0u64, N, Event::new().unwrap()));
        victim.start().unwrap();
        assert!(started.wait_timeout(T));
        producer.start().unwrap();
        let killer = killer(&victim, 30);
        let mut mine = 0u64;
        let mut last = None::<u64>;
        let end = Instant::now() + T;
        let mut buf = [0u64; BATCH];
        loop {
            assert!(Instant::now() < end, "stuck after {mine} items");
            let k = q.pop_into(&mut buf);
            for &v in &buf[..k] {
                assert!(v < N, "garbage {v:#x}");
                assert!(last.is_none_or(|l| l < v), "{v} after {last:?}: duplicate or reorder");
                last = Some(v);
                mine += 1;
            }
            if k == 0 {
                if killer.is_finished() && !producer.is_alive() && q.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        killer.join().unwrap();
        let _ = common::join(&victim);
        common::join(&producer).unwrap();
        let theirs = common::read_u64(&got);
        assert!(mine + theirs <= N, "duplicates: {mine} + {theirs} > {N}");
        assert!(mine + theirs + BATCH as u64 >= N, "lost more than the victim's batch: {mine} + {theirs} of {N}");
        assert_eq!(q.len(), 0);
        for i in 0..16 {
            q.try_push(i).unwrap_or_else(|e| panic!("ring wedged after the kill: push {i}: {e}"));
        }
        assert!(q.is_full());
    }
}

// ---- SPSC batch forms and loans; the role of a dead end taken over ----

shmproc::entry! {
    /// Produces 0.. with push_slice and loans alternately, from `from`.
    fn spsc_produce(args: (SpscQueue<u64>, u64, u64, Event)) -> Result<(), String> {
        let (q, from, n, started) = args;
        let mut tx = q.producer().map_err(|e| e.to_string())?;
        started.set();
        let mut i = from;
        while i < n {
            if i % 3 == 0 {
                match tx.loan() {
                    Ok(mut l) => {
                        l.write(i);
                        l.commit().map_err(|e| e.to_string())?;
                        i += 1;
                    }
                    Err(_) => std::thread::yield_now(),
                }
            } else {
                let batch: Vec<u64> = (i..(i + BATCH as u64).min(n)).collect();
                let k = tx.push_slice(&batch) as u64;
                if k == 0 {
                    std::thread::yield_now();
                }
                i += k;
            }
        }
        Ok(())
    }
}

/// The SPSC producer (push_slice and loans) killed at a random point; a
/// new producer in another process takes its role over and goes on from
/// where the consumer says the stream stopped: the consumer sees 0..N
/// exactly once, in order.
#[test]
fn spsc_producer_killed_mid_batch_or_loan_and_replaced_loses_nothing() {
    const N: u64 = 20_000;
    for _round in 0..4 {
        let q = SpscQueue::<u64>::new(16).unwrap();
        let mut rx = q.consumer().unwrap();
        let started = Event::new().unwrap();
        let mut victim = Process::new(spsc_produce, (q.clone(), 0u64, u64::MAX, started.clone())).with_daemon(true);
        victim.start().unwrap();
        assert!(started.wait_timeout(T));
        kill_at_random(&victim, 20);
        let mut next = 0u64;
        let mut buf = [0u64; BATCH];
        loop {
            let k = rx.pop_into(&mut buf);
            if k == 0 {
                break;
            }
            for &v in &buf[..k] {
                assert_eq!(v, next, "hole or duplicate from the dead producer");
                next += 1;
            }
        }
        let heir_started = Event::new().unwrap();
        let mut heir = Process::new(spsc_produce, (q.clone(), next, N.max(next + 100), heir_started.clone()));
        heir.start().unwrap();
        // The heir holds the producer role from here on (before, the
        // consumer rightly sees no producer: Disconnected).
        assert!(heir_started.wait_timeout(T), "the dead producer's role was not taken over");
        let goal = N.max(next + 100);
        let end = Instant::now() + T;
        while next < goal {
            assert!(Instant::now() < end, "stuck at {next}");
            match rx.pop_timeout(Duration::from_millis(50)) {
                Ok(v) => {
                    assert_eq!(v, next, "hole or duplicate after the takeover");
                    next += 1;
                }
                Err(PopTimeoutError::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
        common::join(&heir).unwrap();
        assert_eq!(q.len(), 0);
    }
}

shmproc::entry! {
    /// Consumes with pop_into and peek/release alternately, checking the
    /// order, recording the next expected item after each step.
    fn spsc_consume(args: (SpscQueue<u64>, Value<u64>, Event)) -> Result<(), String> {
        let (q, next, started) = args;
        let mut rx = q.consumer().map_err(|e| e.to_string())?;
        started.set();
        let mut want = next.get().map_err(|e| e.to_string())?;
        let mut buf = [0u64; BATCH];
        loop {
            if want % 3 == 0 {
                match rx.peek() {
                    Ok(l) => {
                        let v = l.read();
                        if v != want {
                            return Err(format!("{v} where {want} was due"));
                        }
                        l.release();
                        want += 1;
                    }
                    Err(_) => std::thread::yield_now(),
                }
            } else {
                let k = rx.pop_into(&mut buf);
                for &v in &buf[..k] {
                    if v != want {
                        return Err(format!("{v} where {want} was due"));
                    }
                    want += 1;
                }
                if k == 0 {
                    std::thread::yield_now();
                }
            }
            next.set(want).map_err(|e| e.to_string())?;
        }
    }
}

/// The SPSC consumer (pop_into and peek/release) killed at a random
/// point; the parent takes the consumer role over: it gets the rest of
/// the stream in order, starting at most one batch past what the dead one
/// recorded, and the producer was not wedged.
#[test]
fn spsc_consumer_killed_mid_batch_or_loan_and_replaced_loses_at_most_its_own_batch() {
    const N: u64 = 20_000;
    for _round in 0..4 {
        let q = SpscQueue::<u64>::new(16).unwrap();
        let recorded = Value::new(0u64).unwrap();
        let started = Event::new().unwrap();
        let mut victim = Process::new(spsc_consume, (q.clone(), recorded.clone(), started.clone())).with_daemon(true);
        victim.start().unwrap();
        assert!(started.wait_timeout(T));
        let mut producer = Process::new(spsc_produce, (q.clone(), 0u64, N, Event::new().unwrap()));
        producer.start().unwrap();
        kill_at_random(&victim, 20);
        let end = Instant::now() + T;
        let mut rx = loop {
            match q.consumer() {
                Ok(rx) => break rx,
                Err(e) => {
                    assert!(Instant::now() < end, "the dead consumer's role was never freed: {e}");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        let theirs = common::read_u64(&recorded);
        let mut next = None::<u64>;
        while next.is_none_or(|n| n < N) {
            assert!(Instant::now() < end, "stuck at {next:?} (victim recorded {theirs})");
            match rx.pop_timeout(Duration::from_millis(50)) {
                Ok(v) => {
                    match next {
                        None => assert!(
                            v >= theirs && v <= theirs + BATCH as u64,
                            "first item {v} after the takeover, the dead consumer recorded {theirs}"
                        ),
                        Some(n) => assert_eq!(v, n, "hole or duplicate"),
                    }
                    next = Some(v + 1);
                }
                // The producer finished and left: nothing may be missing
                // but the dead consumer's last batch.
                Err(PopTimeoutError::Disconnected) => {
                    match next {
                        Some(n) => assert_eq!(n, N, "items lost"),
                        None => assert!(theirs + BATCH as u64 >= N, "items lost: the dead one recorded {theirs}"),
                    }
                    break;
                }
                Err(PopTimeoutError::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
        common::join(&producer).unwrap();
        assert_eq!(q.len(), 0);
    }
}

// ---- JoinableQueue counts and SimpleQueue ----

shmproc::entry! {
    /// Puts 0..n into a JoinableQueue.
    fn jq_put(args: (JoinableQueue<u64>, u64, Event)) -> Result<(), String> {
        let (q, n, started) = args;
        started.set();
        for i in 0..n {
            q.put(i).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

shmproc::entry! {
    /// Gets and task_done's from a JoinableQueue until killed.
    fn jq_get(args: (JoinableQueue<u64>, Event)) -> Result<(), String> {
        let (q, started) = args;
        started.set();
        loop {
            match q.get_timeout(Duration::from_millis(20)) {
                Ok(_) => q.task_done().map_err(|e| e.to_string())?,
                Err(GetTimeoutError::TimedOut) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

shmproc::entry! {
    /// Puts (tag << 32 | i) for i = 0, 1, ... into a JoinableQueue until
    /// killed.
    fn jq_put_tagged(args: (JoinableQueue<u64>, u64, Event)) -> Result<(), String> {
        let (q, tag, started) = args;
        started.set();
        for i in 0.. {
            q.put((tag << 32) | i).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A bounded JoinableQueue whose producers are killed in mid `put`: once
/// the parent has got and task_done'd every item that arrived,
/// `unfinished_tasks` is 0 and `join` returns (the dead puts' counts are
/// not left behind), qsize is 0.
#[test]
fn joinable_queue_producer_killed_mid_put_leaves_exact_counts_and_join_returns() {
    producer_killed_mid_put(4);
}

/// The same with an unbounded JoinableQueue (a chain of rings). Failed
/// before the chain counted from its rings (about half the runs of the
/// one-victim version of this test): `unfinished_tasks` stayed 1 with
/// qsize 0 and `join` never returned. The chain counted a put (`puts +=
/// 1`) before the ring claimed its slot and took the count back only in
/// the same process, so a producer killed between the count and the
/// claim, or between the claim and the publish (the ring's repair marks
/// the slot skipped in the ring's own count, which the chain did not
/// read), left one unfinished task nobody could finish. Now the ring's
/// claim is the count and its repair the uncount (`links::Tally`).
#[test]
fn unbounded_joinable_queue_producer_killed_mid_put_leaves_exact_counts_and_join_returns() {
    producer_killed_mid_put(0);
}

/// Rounds of `VICTIMS` producers (each putting its own tagged sequence
/// without end) killed at independent random instants while the parent
/// gets and task_done's: per producer a hole-free prefix in order; then
/// qsize 0, `unfinished_tasks` 0 and `join` returns.
fn producer_killed_mid_put(cap: u64) {
    const ROUNDS: u64 = 6;
    const VICTIMS: u64 = 3;
    for round in 0..ROUNDS {
        let q = JoinableQueue::<u64>::new(cap).unwrap();
        let mut victims = Vec::new();
        let mut killers = Vec::new();
        for tag in 0..VICTIMS {
            let started = Event::new().unwrap();
            let mut victim = Process::new(jq_put_tagged, (q.clone(), tag, started.clone())).with_daemon(true);
            victim.start().unwrap();
            assert!(started.wait_timeout(T));
            killers.push(killer(&victim, 20));
            victims.push(victim);
        }
        let mut next = [0u64; VICTIMS as usize];
        let mut reaped = false;
        let end = Instant::now() + T;
        loop {
            assert!(Instant::now() < end, "stuck at {next:?}");
            match q.get_timeout(Duration::from_millis(20)) {
                Ok(v) => {
                    let (tag, i) = ((v >> 32) as usize, v & 0xffff_ffff);
                    assert!(tag < VICTIMS as usize, "unknown item {v:#x}");
                    assert_eq!(i, next[tag], "hole or duplicate from producer {tag}");
                    next[tag] += 1;
                    q.task_done().unwrap();
                }
                Err(GetTimeoutError::TimedOut) if reaped => break,
                Err(GetTimeoutError::TimedOut) if killers.iter().all(|k| k.is_finished()) => {
                    // Reaped (no zombie left), then one more get: the
                    // dead producers' claims are seen as dead from here.
                    for v in &victims {
                        let _ = common::join(v);
                    }
                    reaped = true;
                }
                Err(GetTimeoutError::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
        for k in killers {
            k.join().unwrap();
        }
        assert_eq!(q.qsize(), 0);
        assert_eq!(q.unfinished_tasks(), 0, "round {round}: after {next:?} items got and done (cap {cap})");
        assert!(q.join_timeout(T), "join did not return (cap {cap})");
    }
}

/// A JoinableQueue consumer (get + task_done) killed at a random point:
/// the count is off by at most the dead one's own item (got, not done),
/// and a `task_done` for it lets `join` return.
#[test]
fn joinable_queue_consumer_killed_mid_get_leaves_at_most_its_own_task() {
    const N: u64 = 5_000;
    for cap in [4u64, 0] {
        for _round in 0..3 {
            let q = JoinableQueue::<u64>::new(cap).unwrap();
            let started = Event::new().unwrap();
            let mut victim = Process::new(jq_get, (q.clone(), started.clone())).with_daemon(true);
            victim.start().unwrap();
            assert!(started.wait_timeout(T));
            let mut producer = Process::new(jq_put, (q.clone(), N, Event::new().unwrap()));
            producer.start().unwrap();
            kill_at_random(&victim, 20);
            let end = Instant::now() + T;
            let mut last = None::<u64>;
            loop {
                assert!(Instant::now() < end, "stuck");
                match q.get_timeout(Duration::from_millis(20)) {
                    Ok(v) => {
                        assert!(last.is_none_or(|l| l < v), "{v} after {last:?}");
                        last = Some(v);
                        q.task_done().unwrap();
                    }
                    Err(GetTimeoutError::TimedOut) if !producer.is_alive() && q.empty() => break,
                    Err(GetTimeoutError::TimedOut) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            common::join(&producer).unwrap();
            let left = q.unfinished_tasks();
            assert!(left <= 1, "{left} tasks unfinished; only the dead consumer's own item may be (cap {cap})");
            for _ in 0..left {
                q.task_done().unwrap();
            }
            assert!(q.join_timeout(T), "join did not return (cap {cap})");
        }
    }
}

shmproc::entry! {
    /// Puts 0..n into a SimpleQueue.
    fn sq_put(args: (SimpleQueue<u64>, u64, Event)) -> Result<(), String> {
        let (q, n, started) = args;
        started.set();
        for i in 0..n {
            q.put(i).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A SimpleQueue producer killed in mid put: the consumer gets a
/// hole-free prefix, the queue is empty and usable afterwards.
#[test]
fn simple_queue_producer_killed_mid_put_leaves_a_clean_prefix() {
    for _round in 0..4 {
        let q = SimpleQueue::<u64>::new(0).unwrap();
        let started = Event::new().unwrap();
        let mut victim = Process::new(sq_put, (q.clone(), u64::MAX, started.clone())).with_daemon(true);
        victim.start().unwrap();
        assert!(started.wait_timeout(T));
        let killer = killer(&victim, 20);
        let mut next = 0u64;
        let end = Instant::now() + T;
        loop {
            assert!(Instant::now() < end, "stuck at {next}");
            match q.get_timeout(Duration::from_millis(20)) {
                Ok(v) => {
                    assert_eq!(v, next, "hole or duplicate");
                    next += 1;
                }
                Err(GetTimeoutError::TimedOut) if killer.is_finished() => break,
                Err(GetTimeoutError::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
        killer.join().unwrap();
        let _ = common::join(&victim);
        assert!(q.empty());
        q.put(7).unwrap();
        assert_eq!(q.get_timeout(T).unwrap(), 7);
    }
}

// ---- Pipe values ----

shmproc::entry! {
    /// Sends (i, text of i) values until killed.
    fn pipe_send_values(args: (shmproc::Connection, Event)) -> Result<(), String> {
        let (mut c, started) = args;
        started.set();
        for i in 0u64.. {
            c.send_value(&(i, "v".repeat((i % 300) as usize))).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A sender of Handoff values killed at a random point: the receiver gets
/// a hole-free prefix of intact values, then `Disconnected` (not a hang,
/// not a torn value).
#[test]
fn pipe_value_sender_killed_mid_send_gives_a_clean_prefix_then_disconnected() {
    for _round in 0..4 {
        let (mut a, b) = shmproc::pipe(true).unwrap();
        let started = Event::new().unwrap();
        let mut victim = Process::new(pipe_send_values, (b, started.clone())).with_daemon(true);
        victim.start().unwrap();
        assert!(started.wait_timeout(T));
        let killer = killer(&victim, 20);
        let mut next = 0u64;
        loop {
            match a.recv_value_timeout::<(u64, String)>(T) {
                Ok((i, s)) => {
                    assert_eq!(i, next, "hole or duplicate");
                    assert_eq!(s, "v".repeat((i % 300) as usize), "torn value {i}");
                    next += 1;
                }
                Err(shmproc::PipeRecvValueTimeoutError::Disconnected) => break,
                Err(e) => panic!("after {next} values: {e}"),
            }
        }
        killer.join().unwrap();
        let _ = common::join(&victim);
    }
}

// ---- sleepers of the sync family killed in their wait ----

shmproc::entry! {
    /// Runs one blocking wait of the sync family (by `what`), forever.
    fn sleep_in(args: (String, shmproc::Lock, shmproc::Semaphore, shmproc::Condition, shmproc::Barrier, Event)) -> Result<(), String> {
        let (what, lock, sem, cond, barrier, started) = args;
        started.set();
        match what.as_str() {
            "lock" => drop(lock.lock()),
            "semaphore" => sem.acquire(),
            "condition" => {
                let mut g = cond.lock().map_err(|e| e.to_string())?;
                let _ = cond.wait(&mut g);
            }
            "barrier" => drop(barrier.wait()),
            _ => return Err(format!("unknown wait {what}")),
        }
        Err("woke".into())
    }
}

/// A process killed while asleep in Lock::lock, Semaphore::acquire,
/// Condition::wait or Barrier::wait does not swallow the wake-up a live
/// sleeper needs, nor leave the object unusable (the barrier counts the
/// dead party: it breaks on a timeout, then `reset` makes it usable).
#[test]
fn sleepers_killed_in_their_wait_do_not_swallow_the_live_ones_wake() {
    for what in ["lock", "semaphore", "condition", "barrier"] {
        let lock = shmproc::Lock::new().unwrap();
        let sem = shmproc::Semaphore::new(0).unwrap();
        let cond = shmproc::Condition::new().unwrap();
        let barrier = shmproc::Barrier::new(2).unwrap();
        let guard = if what == "lock" { Some(lock.lock().unwrap()) } else { None };
        let started = Event::new().unwrap();
        let args = (what.to_string(), lock.clone(), sem.clone(), cond.clone(), barrier.clone(), started.clone());
        let mut victim = Process::new(sleep_in, args).with_daemon(true);
        victim.start().unwrap();
        assert!(started.wait_timeout(T));
        common::wait_for("the victim asleep", || common::threads_in_futex(victim.pid().unwrap()) > 0);
        kill_at_random(&victim, 5);
        // A live sleeper (a thread here) then the wake it needs.
        let live = {
            let (lock, sem, cond, barrier) = (lock.clone(), sem.clone(), cond.clone(), barrier.clone());
            std::thread::spawn(move || match what {
                "lock" => lock.lock_timeout(T).is_ok(),
                "semaphore" => sem.acquire_timeout(T),
                "condition" => {
                    let mut g = cond.lock().unwrap();
                    cond.wait_timeout(&mut g, T).unwrap()
                }
                _ => {
                    // The dead party counts as arrived (as in Python): this
                    // wait trips the barrier or times out; it must return.
                    let _ = barrier.wait_timeout(Duration::from_millis(200));
                    true
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        match what {
            "lock" => drop(guard),
            "semaphore" => sem.release().unwrap(),
            "condition" => {
                let end = Instant::now() + T;
                loop {
                    let g = cond.lock().unwrap();
                    cond.notify(&g, 1);
                    drop(g);
                    if live.is_finished() {
                        break;
                    }
                    assert!(Instant::now() < end, "condition: the live waiter never woke");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            _ => {}
        }
        assert!(live.join().unwrap(), "{what}: the live sleeper did not get its wake-up");
        if what == "barrier" {
            barrier.reset();
            let b2 = barrier.clone();
            let other = std::thread::spawn(move || b2.wait_timeout(T).is_ok());
            assert!(barrier.wait_timeout(T).is_ok(), "barrier unusable after reset");
            assert!(other.join().unwrap());
        }
    }
}

// ---- ByteQueue send / recv_into ----

use common::{byte_frame, frame_number};

shmproc::entry! {
    /// Sends frames from..n with `send`.
    fn bq_send(args: (shmproc::queue::ByteQueue, u64, u64, Event)) -> Result<(), String> {
        let (q, from, n, started) = args;
        let mut tx = q.producer().map_err(|e| e.to_string())?;
        started.set();
        for i in from..n {
            tx.send(&byte_frame(i)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

shmproc::entry! {
    /// Receives with `recv_into`, recording the next frame it expects.
    fn bq_recv(args: (shmproc::queue::ByteQueue, Value<u64>, Event)) -> Result<(), String> {
        let (q, next, started) = args;
        let mut rx = q.consumer().map_err(|e| e.to_string())?;
        started.set();
        let mut buf = Vec::new();
        loop {
            rx.recv_into(&mut buf).map_err(|e| e.to_string())?;
            let i = u64::from_le_bytes(buf[..8].try_into().map_err(|_| "short frame")?);
            if buf != byte_frame(i) {
                return Err(format!("torn frame {i}"));
            }
            next.set(i + 1).map_err(|e| e.to_string())?;
        }
    }
}

/// A ByteQueue producer killed in mid `send` and a consumer killed in mid
/// `recv_into`, each at a random point, each then replaced by a process
/// that takes its role over: frames stay intact and in order, none is
/// duplicated, and only the dead consumer's own frame may be missing.
#[test]
fn byte_queue_ends_killed_mid_send_and_mid_recv_into_and_replaced_lose_at_most_their_own_frame() {
    const N: u64 = 3_000;
    for _round in 0..3 {
        let q = shmproc::queue::ByteQueue::new(4096, 1024).unwrap();
        // The consumer first: a victim, killed at random.
        let recorded = Value::new(0u64).unwrap();
        let started = Event::new().unwrap();
        let mut cvictim = Process::new(bq_recv, (q.clone(), recorded.clone(), started.clone())).with_daemon(true);
        cvictim.start().unwrap();
        assert!(started.wait_timeout(T));
        let started = Event::new().unwrap();
        let mut pvictim = Process::new(bq_send, (q.clone(), 0u64, u64::MAX, started.clone())).with_daemon(true);
        pvictim.start().unwrap();
        assert!(started.wait_timeout(T));
        kill_at_random(&cvictim, 10);
        let end = Instant::now() + T;
        let mut rx = loop {
            match q.consumer() {
                Ok(rx) => break rx,
                Err(e) => {
                    assert!(Instant::now() < end, "the dead consumer's role was never freed: {e}");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        let theirs = common::read_u64(&recorded);
        kill_at_random(&pvictim, 10);
        // What the dead producer sent: intact, in order, starting at most
        // one frame past what the dead consumer recorded.
        let mut next = None::<u64>;
        let mut buf = Vec::new();
        loop {
            match rx.recv_timeout_into(&mut buf, T) {
                Ok(()) => {
                    let i = frame_number(&buf);
                    match next {
                        None => {
                            assert!(i == theirs || i == theirs + 1, "first frame {i}, dead consumer recorded {theirs}")
                        }
                        Some(n) => assert_eq!(i, n, "hole or duplicate"),
                    }
                    next = Some(i + 1);
                }
                Err(shmproc::RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("after {next:?}: {e}"),
            }
        }
        // An heir producer goes on from there.
        let from = next.unwrap_or(theirs + 1);
        let started = Event::new().unwrap();
        let mut heir = Process::new(bq_send, (q.clone(), from, from + N, started.clone()));
        heir.start().unwrap();
        assert!(started.wait_timeout(T), "the dead producer's role was not taken over");
        for want in from..from + N {
            rx.recv_timeout_into(&mut buf, T).unwrap_or_else(|e| panic!("frame {want}: {e}"));
            assert_eq!(frame_number(&buf), want, "hole or duplicate after the takeover");
        }
        common::join(&heir).unwrap();
    }
}

// ---- RLock held recursively by a killed process ----

shmproc::entry! {
    /// Takes the RLock three levels deep, then sleeps until killed.
    fn rlock_hold(args: (shmproc::RLock, Event)) -> Result<(), String> {
        let (r, held) = args;
        let guards: Vec<_> = (0..3).map(|_| r.lock().map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
        held.set();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let _ = &guards;
        }
    }
}

/// An RLock held three levels deep by a process killed with SIGKILL: the
/// next taker gets `OwnerDied` at level 1 (not 4, not the dead one's 3),
/// and after `make_consistent` and one release the lock is free for all.
#[test]
fn rlock_held_recursively_by_a_killed_process_is_taken_over_at_level_one() {
    let r = shmproc::RLock::new().unwrap();
    let held = Event::new().unwrap();
    let mut victim = Process::new(rlock_hold, (r.clone(), held.clone())).with_daemon(true);
    victim.start().unwrap();
    assert!(held.wait_timeout(T));
    assert!(matches!(r.try_lock(), Err(LockError::WouldBlock)), "held by a live process");
    kill_at_random(&victim, 5);
    match r.lock_timeout(T) {
        Err(LockError::OwnerDied(mut g)) => {
            assert_eq!(r.level(), 1, "taken over at the dead owner's depth");
            g.make_consistent();
        }
        Ok(_) => panic!("the dead owner's death was not reported"),
        Err(e) => panic!("{e}"),
    }
    assert_eq!(r.level(), 0);
    let r2 = r.clone();
    assert!(std::thread::spawn(move || r2.lock_timeout(T).is_ok()).join().unwrap(), "not free after the takeover");
}
