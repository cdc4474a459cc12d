//! What the README's "Crashes and bad input" promises for semaphores: a
//! unit taken by a process that is then SIGKILLed is lost (the value stays
//! one lower, as in Python), and the parent that sees the death can give
//! it back.

mod common;

use std::time::Duration;

use shmproc::{BoundedSemaphore, Event, Process, ProcessError, Semaphore};

/// Bound on every wait of the test itself.
const BOUND: Duration = Duration::from_secs(30);

fn name(test: &str) -> String {
    format!("semcrash-{test}-{}", std::process::id())
}

shmproc::entry! {
    fn take_and_hang(args: (Semaphore, BoundedSemaphore, Event)) -> Result<(), String> {
        let (sem, bounded, took) = args;
        if !sem.acquire_timeout(BOUND) || !bounded.acquire_timeout(BOUND) {
            return Err("no unit to take".into());
        }
        took.set();
        std::thread::sleep(BOUND);
        Err("was not killed".into())
    }
}

#[test]
fn a_unit_taken_by_a_killed_process_is_lost_until_released_for_it() {
    let sem = Semaphore::create(&name("sem"), 2).unwrap();
    let bounded = BoundedSemaphore::create(&name("bounded"), 1).unwrap();
    let took = Event::create(&name("took")).unwrap();
    let mut p = Process::new(take_and_hang, (sem.clone(), bounded.clone(), took.clone())).with_daemon(true);
    p.start().unwrap();
    if !took.wait_timeout(BOUND) {
        let _ = p.kill();
        panic!("child did not take its units within {BOUND:?}");
    }
    p.kill().unwrap();
    assert!(matches!(common::join(&p), Err(ProcessError::Signaled { signal: 9, .. })));

    // Lost: nobody gives the units back.
    assert_eq!(sem.get_value(), 1);
    assert_eq!(bounded.get_value(), 0);
    assert!(!bounded.try_acquire());

    // The parent, which saw the death, releases for the dead child.
    sem.release().unwrap();
    bounded.release().unwrap();
    assert_eq!(sem.get_value(), 2);
    assert!(bounded.try_acquire());
}
