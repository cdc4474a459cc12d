//! Semaphore, BoundedSemaphore, Event, Condition, Barrier and Array across
//! processes.

use std::time::Duration;

use libtest_mimic::Trial;
use shmproc::{Array, Barrier, BarrierError, BoundedSemaphore, Condition, Event, RawSegment, Semaphore, Value};

use crate::common::{Child, Roles, e, ensure, name, wait_for, wait_until_asleep};
use crate::trial;

pub const ROLES: Roles = &[
    ("semaphore_worker", child_semaphore_worker),
    ("event_waiter", child_event_waiter),
    ("producer", child_producer),
    ("barrier_party", child_barrier_party),
    ("barrier_abort", child_barrier_abort),
    ("bounded_over_release", child_bounded_over_release),
    ("array_squares", child_array_squares),
    ("sleep_on_everything", child_sleep_on_everything),
    ("raw_writer", child_raw_writer),
];

pub fn trials() -> Vec<Trial> {
    vec![
        trial("semaphore_bound_is_never_exceeded_across_processes", semaphore_bound),
        trial("bounded_semaphore_release_above_initial_fails_in_any_process", bounded_over_release),
        trial("event_set_in_one_process_wakes_waiters_in_others", event_wakes),
        trial("condition_producer_consumer_across_processes", condition_producer_consumer),
        trial("barrier_rounds_give_each_party_a_distinct_index", barrier_rounds),
        trial("barrier_abort_in_other_process_breaks_waiters", barrier_abort),
        trial("array_written_by_child_is_read_by_parent", array_child),
        trial("dead_waiters_never_block_notifiers", dead_waiters),
        trial("raw_segment_bytes_cross_processes", raw_segment),
    ]
}

const SEM_PERMITS: u32 = 2;

/// args: semaphore, inside-counter Value<[u32;2]> (current, max), rounds.
fn child_semaphore_worker(args: &[String]) -> Result<(), String> {
    let sem = Semaphore::open(&args[0]).map_err(e)?;
    let inside = Value::<[u32; 2]>::open(&args[1]).map_err(e)?;
    let rounds: u32 = args[2].parse().map_err(e)?;
    for _ in 0..rounds {
        sem.acquire();
        inside.get_lock().map_err(e)?.update(|s| {
            s[0] += 1;
            s[1] = s[1].max(s[0]);
        });
        std::thread::sleep(Duration::from_micros(50));
        inside.get_lock().map_err(e)?.update(|s| s[0] -= 1);
        sem.release().map_err(e)?;
    }
    Ok(())
}

fn semaphore_bound() {
    let sem = Semaphore::create(&name("sem-bound"), SEM_PERMITS).unwrap();
    let inside = Value::create(&name("sem-inside"), [0u32; 2]).unwrap();
    let children: Vec<Child> =
        (0..4).map(|_| Child::spawn("semaphore_worker", &[sem.name(), inside.name(), "300"])).collect();
    for c in children {
        c.join_ok();
    }
    let [now, max] = inside.get().unwrap();
    assert_eq!(now, 0);
    assert!(max <= SEM_PERMITS, "{max} processes were inside at once");
    assert!(max >= 1);
    assert_eq!(sem.get_value(), SEM_PERMITS);
}

fn child_bounded_over_release(args: &[String]) -> Result<(), String> {
    let sem = BoundedSemaphore::open(&args[0]).map_err(e)?;
    sem.release().map_err(e)?; // parent took one: back to the bound
    let err = sem.release().err().ok_or("release above the bound succeeded")?;
    ensure(err.bound == 2, format!("bound {}", err.bound))
}

fn bounded_over_release() {
    let sem = BoundedSemaphore::create(&name("bounded"), 2).unwrap();
    assert!(sem.try_acquire());
    Child::spawn("bounded_over_release", &[sem.name()]).join_ok();
    assert_eq!(sem.get_value(), 2);
    assert!(sem.release().is_err());
}

/// args: event, Array<u8> of flags, my index.
fn child_event_waiter(args: &[String]) -> Result<(), String> {
    let ev = Event::open(&args[0]).map_err(e)?;
    let flags = Array::<u8>::open(&args[1]).map_err(e)?;
    let i: usize = args[2].parse().map_err(e)?;
    flags.set(i, 1).map_err(e)?; // "I am about to wait"
    ensure(ev.wait_timeout(Duration::from_secs(30)), "never woken")?;
    flags.set(i, 2).map_err(e)?;
    Ok(())
}

fn event_wakes() {
    let ev = Event::create(&name("event")).unwrap();
    let flags = Array::<u8>::create(&name("event-flags"), 3).unwrap();
    let children: Vec<Child> =
        (0..3).map(|i| Child::spawn("event_waiter", &[ev.name(), flags.name(), &i.to_string()])).collect();
    // Wait until all are asleep in their wait (nobody returned early).
    wait_for("every waiter to start", || !flags.to_vec().unwrap().contains(&0));
    for c in &children {
        wait_until_asleep(c.pid(), 1);
    }
    assert_eq!(flags.to_vec().unwrap(), vec![1, 1, 1], "a waiter returned before set");
    ev.set();
    for c in children {
        c.join_ok();
    }
    assert_eq!(flags.to_vec().unwrap(), vec![2, 2, 2]);
}

const ITEMS: u64 = 2_000;

/// args: condition, mailbox Value<[u64; 2]> = (full flag, item).
fn child_producer(args: &[String]) -> Result<(), String> {
    let cond = Condition::open(&args[0]).map_err(e)?;
    let mailbox = Value::<[u64; 2]>::open(&args[1]).map_err(e)?;
    for item in 1..=ITEMS {
        let mut g = cond.lock().map_err(e)?;
        let ok =
            cond.wait_for_timeout(&mut g, Duration::from_secs(30), || mailbox.get().unwrap()[0] == 0).map_err(e)?;
        ensure(ok, "consumer never emptied the mailbox")?;
        mailbox.set([1, item]).map_err(e)?;
        cond.notify_all(&g);
    }
    Ok(())
}

fn condition_producer_consumer() {
    let cond = Condition::create(&name("cond")).unwrap();
    let mailbox = Value::create(&name("cond-mailbox"), [0u64; 2]).unwrap();
    let producer = Child::spawn("producer", &[cond.name(), mailbox.name()]);
    let mut received = Vec::new();
    while received.len() < ITEMS as usize {
        let mut g = cond.lock().unwrap();
        let ok = cond.wait_for_timeout(&mut g, Duration::from_secs(30), || mailbox.get().unwrap()[0] == 1).unwrap();
        assert!(ok, "producer stalled after {} items", received.len());
        received.push(mailbox.get().unwrap()[1]);
        mailbox.set([0, 0]).unwrap();
        cond.notify_all(&g);
    }
    producer.join_ok();
    assert_eq!(received, (1..=ITEMS).collect::<Vec<_>>());
}

const PARTIES: u32 = 3;
const ROUNDS: usize = 5;

/// args: barrier, Array<u32> of (round, party) arrival indices, my party.
fn child_barrier_party(args: &[String]) -> Result<(), String> {
    let b = Barrier::open(&args[0]).map_err(e)?;
    let log = Array::<u32>::open(&args[1]).map_err(e)?;
    let me: usize = args[2].parse().map_err(e)?;
    barrier_party(&b, &log, me)
}

fn barrier_party(b: &Barrier, log: &Array<u32>, me: usize) -> Result<(), String> {
    let p = PARTIES as usize;
    for round in 0..ROUNDS {
        // Everybody must have finished the previous round's write.
        if round > 0 {
            let prev = log.to_vec().map_err(e)?;
            ensure(
                prev[(round - 1) * p..round * p].iter().all(|&x| x != u32::MAX),
                format!("party {me} passed round {round} early"),
            )?;
        }
        let idx = b.wait_timeout(Duration::from_secs(30)).map_err(e)?;
        log.set(round * p + me, idx).map_err(e)?;
        b.wait_timeout(Duration::from_secs(30)).map_err(e)?;
    }
    Ok(())
}

fn barrier_rounds() {
    let b = Barrier::create(&name("barrier"), PARTIES).unwrap();
    let log = Array::create_from_slice(&name("barrier-log"), &[u32::MAX; PARTIES as usize * ROUNDS]).unwrap();
    let children: Vec<Child> =
        (1..PARTIES).map(|i| Child::spawn("barrier_party", &[b.name(), log.name(), &i.to_string()])).collect();
    barrier_party(&b, &log, 0).unwrap();
    for c in children {
        c.join_ok();
    }
    let log = log.to_vec().unwrap();
    for round in log.chunks(PARTIES as usize) {
        let mut idx = round.to_vec();
        idx.sort();
        assert_eq!(idx, (0..PARTIES).collect::<Vec<_>>(), "round indices {round:?}");
    }
    assert!(!b.is_broken());
    assert_eq!(b.n_waiting(), 0);
}

fn child_barrier_abort(args: &[String]) -> Result<(), String> {
    let b = Barrier::open(&args[0]).map_err(e)?;
    while b.n_waiting() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    b.abort();
    Ok(())
}

fn barrier_abort() {
    let b = Barrier::create(&name("barrier-abort"), 2).unwrap();
    let child = Child::spawn("barrier_abort", &[b.name()]);
    assert_eq!(b.wait_timeout(Duration::from_secs(30)), Err(BarrierError::Broken));
    child.join_ok();
    assert!(b.is_broken());
    assert_eq!(b.wait(), Err(BarrierError::Broken));
    b.reset();
    assert!(!b.is_broken());
}

fn child_array_squares(args: &[String]) -> Result<(), String> {
    let a = Array::<i64>::open(&args[0]).map_err(e)?;
    let mut g = a.get_lock().map_err(e)?;
    for i in 0..g.len() {
        let v = g.get(i).ok_or("index")?;
        g.set(i, v * v);
    }
    Ok(())
}

fn array_child() {
    let a = Array::create_from_slice(&name("array"), &[1i64, -2, 3, 40]).unwrap();
    Child::spawn("array_squares", &[a.name()]).join_ok();
    assert_eq!(a.to_vec().unwrap(), vec![1, 4, 9, 1600]);
}

/// args: condition, event, semaphore, "ready" semaphore. Sleeps in a
/// Condition wait, then (after a spurious return) in Event and Semaphore
/// waits, on separate threads, until killed.
fn child_sleep_on_everything(args: &[String]) -> Result<(), String> {
    let cond = Condition::open(&args[0]).map_err(e)?;
    let ev = Event::open(&args[1]).map_err(e)?;
    let sem = Semaphore::open(&args[2]).map_err(e)?;
    let ready = Semaphore::open(&args[3]).map_err(e)?;
    std::thread::scope(|s| {
        s.spawn(|| ev.wait());
        s.spawn(|| sem.acquire());
        let mut g = cond.lock().unwrap();
        ready.release().unwrap();
        loop {
            cond.wait(&mut g).unwrap();
        }
    })
}

fn dead_waiters() {
    let cond = Condition::create(&name("dead-cond")).unwrap();
    let ev = Event::create(&name("dead-ev")).unwrap();
    let sem = Semaphore::create(&name("dead-sem"), 0).unwrap();
    let ready = Semaphore::create(&name("dead-ready"), 0).unwrap();
    let mut child = Child::spawn("sleep_on_everything", &[cond.name(), ev.name(), sem.name(), ready.name()]);
    assert!(ready.acquire_timeout(Duration::from_secs(30)), "child never got ready");
    // All three of its threads (Condition, Event, Semaphore waits) asleep.
    wait_until_asleep(child.pid(), 3);
    child.kill9();
    child.wait();
    // None of these may wait for the dead waiters.
    {
        let g = cond.lock().unwrap();
        cond.notify_all(&g);
        cond.notify(&g, 1);
    }
    ev.set();
    sem.release().unwrap();
    // And the objects still work for the living.
    assert!(sem.try_acquire());
    assert!(ev.wait_timeout(Duration::from_secs(1)));
    let mut g = cond.lock().unwrap();
    assert!(!cond.wait_timeout(&mut g, Duration::from_millis(10)).unwrap());
}

fn child_raw_writer(args: &[String]) -> Result<(), String> {
    let seg = RawSegment::open(&args[0]).map_err(e)?;
    ensure(seg.len() == 1000, format!("len {}", seg.len()))?;
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    ensure(seg.write(0, &data) == 1000, "short write")
}

fn raw_segment() {
    let seg = RawSegment::create(&name("raw"), 1000).unwrap();
    Child::spawn("raw_writer", &[seg.name()]).join_ok();
    let mut buf = vec![0u8; 1000];
    assert_eq!(seg.read(0, &mut buf), 1000);
    assert!(buf.iter().enumerate().all(|(i, &b)| b == (i as u32 * 7 % 251) as u8));
    // A raw segment is not an Array<u8>: the kind is checked.
    assert!(Array::<u8>::open(seg.name()).is_err());
}
