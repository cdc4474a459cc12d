//! Lock, Mutex, RLock and Value across processes, including kill -9 of a
//! holder.

use std::time::Duration;

use libtest_mimic::Trial;
use shmproc::{Array, ArrayError, Barrier, Event, Lock, LockError, Mutex, RLock, Value};

use crate::common::{Child, Roles, e, ensure, name};
use crate::trial;

pub const ROLES: Roles = &[
    ("increment", child_increment),
    ("hold_lock_forever", child_hold_lock_forever),
    ("hold_mutex_forever", child_hold_mutex_forever),
    ("hold_value_forever", child_hold_value_forever),
    ("array_out_of_range", child_array_out_of_range),
    ("expect_not_recoverable", child_expect_not_recoverable),
    ("rlock_release_not_owner", child_rlock_release_not_owner),
];

pub fn trials() -> Vec<Trial> {
    vec![
        trial("value_incremented_by_several_processes_reaches_exact_total", value_exact_total),
        trial("kill9_of_lock_holder_gives_owner_died_then_recovers", kill9_lock_holder),
        trial("owner_died_without_make_consistent_is_not_recoverable_everywhere", not_recoverable),
        trial("kill9_of_mutex_holder_lets_survivor_repair_data", kill9_mutex_holder),
        trial("value_get_after_kill9_of_holder_reports_owner_died_without_a_guard", value_one_shot_owner_died),
        trial("array_index_out_of_range_is_an_error_in_another_process", array_out_of_range),
        trial("rlock_release_from_other_process_is_refused", rlock_other_process),
        trial("lock_excludes_other_process_until_released", lock_excludes),
    ]
}

const PER_CHILD: u64 = 200_000;
const INCREMENTERS: u32 = 4;

fn child_increment(args: &[String]) -> Result<(), String> {
    let v = Value::<u64>::open(&args[0]).map_err(e)?;
    let n: u64 = args[1].parse().map_err(e)?;
    // Start together so the increments really interleave.
    Barrier::open(&args[2]).map_err(e)?.wait_timeout(Duration::from_secs(30)).map_err(e)?;
    increment(&v, n)
}

fn increment(v: &Value<u64>, n: u64) -> Result<(), String> {
    for _ in 0..n {
        // A read-modify-write that would lose updates without the lock.
        let mut g = v.get_lock().map_err(e)?;
        let x = g.value();
        std::hint::black_box(&x);
        g.set_value(x + 1);
    }
    Ok(())
}

fn value_exact_total() {
    let v = Value::create(&name("exact-total"), 0u64).unwrap();
    let start = Barrier::create(&name("exact-total-start"), INCREMENTERS).unwrap();
    let n = PER_CHILD.to_string();
    let children: Vec<Child> =
        (1..INCREMENTERS).map(|_| Child::spawn("increment", &[v.name(), &n, start.name()])).collect();
    start.wait_timeout(Duration::from_secs(30)).unwrap();
    increment(&v, PER_CHILD).unwrap();
    for c in children {
        c.join_ok();
    }
    assert_eq!(v.get().unwrap(), u64::from(INCREMENTERS) * PER_CHILD);
}

/// Locks `args[0]`, sets event `args[1]`, then sleeps until killed.
fn child_hold_lock_forever(args: &[String]) -> Result<(), String> {
    let lock = Lock::open(&args[0]).map_err(e)?;
    let ready = Event::open(&args[1]).map_err(e)?;
    let g = lock.lock().map_err(e)?;
    ready.set();
    std::thread::sleep(Duration::from_secs(120));
    drop(g);
    Err("was not killed".into())
}

fn start_holder(test: &str) -> (Lock, Child) {
    let lock = Lock::create(&name(test)).unwrap();
    let ready = Event::create(&name(&format!("{test}-ready"))).unwrap();
    let child = Child::spawn("hold_lock_forever", &[lock.name(), ready.name()]);
    assert!(ready.wait_timeout(Duration::from_secs(30)), "child never took the lock");
    (lock, child)
}

fn kill9_lock_holder() {
    let (lock, mut child) = start_holder("kill9-lock");
    assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock)));
    child.kill9(); // not reaped yet: the holder is a zombie
    match lock.lock_timeout(Duration::from_secs(1)) {
        Err(LockError::OwnerDied(mut g)) => {
            assert!(!g.is_consistent());
            g.make_consistent();
        }
        other => panic!("expected OwnerDied within 1 s, got {other:?}"),
    }
    // Recovered: normal again, for us and for a new process.
    drop(lock.lock().unwrap());
    child.wait();
    assert!(lock.try_lock().unwrap().is_consistent());
}

fn child_expect_not_recoverable(args: &[String]) -> Result<(), String> {
    let lock = Lock::open(&args[0]).map_err(e)?;
    match lock.lock_timeout(Duration::from_secs(10)) {
        Err(LockError::NotRecoverable) => Ok(()),
        other => Err(format!("expected NotRecoverable, got {other:?}")),
    }
}

fn not_recoverable() {
    let (lock, mut child) = start_holder("not-recoverable");
    child.kill9();
    child.wait();
    let g = lock.lock().unwrap_err().into_guard().expect("OwnerDied");
    drop(g); // without make_consistent
    assert!(matches!(lock.lock(), Err(LockError::NotRecoverable)));
    assert!(matches!(lock.try_lock(), Err(LockError::NotRecoverable)));
    Child::spawn("expect_not_recoverable", &[lock.name()]).join_ok();
}

/// Locks the Mutex<[u64; 2]> `args[0]`, writes a half-done update (first
/// word only), signals `args[1]` and sleeps until killed.
fn child_hold_mutex_forever(args: &[String]) -> Result<(), String> {
    let m = Mutex::<[u64; 2]>::open(&args[0]).map_err(e)?;
    let ready = Event::open(&args[1]).map_err(e)?;
    let mut g = m.lock().map_err(e)?;
    g.update(|pair| pair[0] += 1); // invariant pair[0] == pair[1] now broken
    ready.set();
    std::thread::sleep(Duration::from_secs(120));
    Err("was not killed".into())
}

fn kill9_mutex_holder() {
    let m = Mutex::create(&name("kill9-mutex"), [5u64, 5]).unwrap();
    let ready = Event::create(&name("kill9-mutex-ready")).unwrap();
    let mut child = Child::spawn("hold_mutex_forever", &[m.name(), ready.name()]);
    assert!(ready.wait_timeout(Duration::from_secs(30)));
    child.kill9();
    let mut g = match m.lock_timeout(Duration::from_secs(1)) {
        Err(LockError::OwnerDied(g)) => g,
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    assert_eq!(g.value(), [6, 5], "the dead owner's partial write is visible");
    g.update(|p| p[1] = p[0]); // repair the invariant
    g.make_consistent();
    drop(g);
    assert_eq!(m.lock().unwrap().value(), [6, 6]);
}

/// Holds the lock of Value `args[0]`, sets event `args[1]`, sleeps until killed.
fn child_hold_value_forever(args: &[String]) -> Result<(), String> {
    let v = Value::<u64>::open(&args[0]).map_err(e)?;
    let ready = Event::open(&args[1]).map_err(e)?;
    let _g = v.get_lock().map_err(e)?;
    ready.set();
    std::thread::sleep(Duration::from_secs(120));
    Err("was not killed".into())
}

/// One-shot reads that leave a function with `?`: before the change the
/// error borrowed a guard, and this did not compile.
fn read_value(v: &Value<u64>) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    Ok(v.get()?)
}

/// Newcomer report item 4: `Value::get` reports a dead holder as
/// `OwnerDied(())` (no guard to leak out of the call), and, unrepaired, the
/// lock is then `NotRecoverable` as documented.
fn value_one_shot_owner_died() {
    let v = Value::create(&name("one-shot-owner-died"), 3u64).unwrap();
    let ready = Event::create(&name("one-shot-owner-died-ready")).unwrap();
    let mut child = Child::spawn("hold_value_forever", &[v.name(), ready.name()]);
    assert!(ready.wait_timeout(Duration::from_secs(30)), "child never took the lock");
    child.kill9();
    child.wait();
    // `get` blocks: run it where a hang fails the test instead.
    let (tx, rx) = std::sync::mpsc::channel();
    let v2 = v.clone();
    std::thread::spawn(move || {
        let r = read_value(&v2).map_err(|e| e.downcast::<LockError<()>>().map(|b| *b).map_err(|e| e.to_string()));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(crate::common::DEADLINE).expect("Value::get did not return after its holder died") {
        Err(Ok(LockError::OwnerDied(()))) => {}
        other => panic!("expected OwnerDied(()), got {other:?}"),
    }
    assert!(matches!(v.try_get_lock(), Err(LockError::NotRecoverable)));
    assert!(matches!(v.set(4), Err(LockError::NotRecoverable)));
}

fn child_array_out_of_range(args: &[String]) -> Result<(), String> {
    let a = Array::<u32>::open(&args[0]).map_err(e)?;
    ensure(matches!(a.get(3), Err(ArrayError::IndexOutOfRange { index: 3, len: 3 })), "get(3) of 3")?;
    ensure(matches!(a.set(7, 1), Err(ArrayError::IndexOutOfRange { index: 7, len: 3 })), "set(7) of 3")?;
    a.set(2, 9).map_err(e)?;
    ensure(a.get(2).map_err(e)? == 9, "get(2) after set")
}

/// Newcomer report item 4: an index past the end is an error (Python's
/// IndexError), for `get` and `set` alike, and writes nothing.
fn array_out_of_range() {
    let a = Array::<u32>::create_from_slice(&name("out-of-range"), &[1, 2, 3]).unwrap();
    Child::spawn("array_out_of_range", &[a.name()]).join_ok();
    assert_eq!(a.to_vec().unwrap(), vec![1, 2, 9]);
    let err = a.get(usize::MAX).unwrap_err();
    assert_eq!(err.to_string(), format!("array index {} out of range for length 3", usize::MAX));
}

fn child_rlock_release_not_owner(args: &[String]) -> Result<(), String> {
    let r = RLock::open(&args[0]).map_err(e)?;
    ensure(r.release().is_err(), "release by a non-owner process succeeded")?;
    ensure(!r.is_owned(), "child believes it owns the parent's RLock")?;
    ensure(matches!(r.try_lock(), Err(LockError::WouldBlock)), "child took a held RLock")
}

fn rlock_other_process() {
    let r = RLock::create(&name("rlock-other")).unwrap();
    let a = r.lock().unwrap();
    let b = r.lock().unwrap();
    assert_eq!(r.level(), 2);
    Child::spawn("rlock_release_not_owner", &[r.name()]).join_ok();
    drop(b);
    drop(a);
    assert!(!r.is_owned());
    assert!(r.release().is_err());
}

fn lock_excludes() {
    let (lock, mut child) = start_holder("excludes");
    assert!(matches!(lock.lock_timeout(Duration::from_millis(50)), Err(LockError::TimedOut)));
    let other = Lock::open(lock.name()).unwrap();
    assert!(other.is_locked());
    child.kill9();
    child.wait();
    assert!(matches!(other.lock(), Err(LockError::OwnerDied(_))));
}
