//! review28: many threads inside processes, and extreme arguments. Real
//! processes; every wait has a deadline; nothing is left in /dev/shm and
//! no process running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shmproc::process::StartMethod;
use shmproc::{Process, Queue};

const DEADLINE: Duration = Duration::from_secs(60);

shmproc::entry! {
    /// Puts one item into the unbounded queue it was given and takes one.
    fn put_one(q: Queue<u64>) {
        q.put_timeout(7, Duration::from_secs(20)).map_err(|e| e.to_string()).unwrap();
    }
}

/// A forked child that touches only its argument (an unbounded queue) and
/// shmproc is safe however many threads the parent has (the promise of
/// `StartMethod::Fork`'s docs), even while another parent thread is
/// putting into and getting from the same queue through a clone of the
/// handle at the instant of the fork: the child's put never waits for a
/// lock that thread held when the child was made.
#[test]
fn a_forked_child_uses_an_unbounded_queue_another_parent_thread_was_using() {
    let q = Queue::<u64>::new(0).unwrap();
    let stop = AtomicBool::new(false);
    let forks = 150;
    let done = std::thread::scope(|s| {
        for _ in 0..2 {
            let (q, stop) = (q.clone(), &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = q.put_nowait(1);
                    let _ = q.get_nowait();
                }
            });
        }
        let outcome = (|| -> Result<u32, String> {
            for i in 0..forks {
                let mut p = Process::new(put_one, q.clone()).with_start_method(StartMethod::Fork);
                p.start().map_err(|e| format!("start {i}: {e}"))?;
                // A child stuck on a lock it inherited held never ends: give it 20 s.
                if !p.join_timeout(Duration::from_secs(20)).map_err(|e| format!("child {i}: {e}"))? {
                    let _ = p.kill();
                    let _ = p.join_timeout(DEADLINE);
                    return Ok(i);
                }
                if p.exitcode() != Some(0) {
                    return Err(format!("child {i} ended with {:?}", p.exitcode()));
                }
            }
            Ok(forks)
        })();
        stop.store(true, Ordering::Relaxed);
        outcome
    });
    assert_eq!(done, Ok(forks), "forked children that finished their put before one never did");
}

/// `with_max_frame(maxsize, 0)` (no room asked for beyond the frame
/// header) makes a queue whose slots are rounded up like every other
/// `max_frame` (its docs), and items fit it; it is not refused with an
/// error naming a capacity the caller never gave (it was: "capacity
/// 4294967298 is too large" for a `maxsize` of 2).
#[test]
fn a_queue_with_max_frame_zero_rounds_its_slots_up_like_any_other() {
    let sut = shmproc::Queue::<Vec<u8>>::with_max_frame(2, 0).unwrap();
    assert!(sut.max_frame() >= 1);
    assert_eq!(sut.max_frame(), shmproc::Queue::<Vec<u8>>::with_max_frame(2, 1).unwrap().max_frame());
    sut.put(Vec::new()).unwrap();
    sut.put(vec![7; 8]).unwrap();
    assert_eq!(sut.get_timeout(DEADLINE).unwrap(), Vec::<u8>::new());
    assert_eq!(sut.get_timeout(DEADLINE).unwrap(), [7; 8]);
    let name = format!("review28-mf0-{}", std::process::id());
    let opts = shmproc::Options::new();
    let joinable = shmproc::JoinableQueue::<String>::create_with_max_frame(&name, 3, 0, &opts).unwrap();
    joinable.put("s".to_string()).unwrap();
    let opened = shmproc::JoinableQueue::<String>::open(&name).unwrap();
    assert_eq!(opened.get_timeout(DEADLINE).unwrap(), "s");
    opened.task_done().unwrap();
    assert!(joinable.join_timeout(DEADLINE));
}

/// An unbounded queue's name leaves room for its rings' names (60 bytes
/// more): a name too long for that is refused naming the name as given
/// (the contract of `OpenError::InvalidName`) and a limit it breaks, not
/// an internal ring name and "longer than 247 bytes" for a name of 217;
/// the longest accepted name works, growing rings included; nothing is
/// left behind.
#[test]
fn an_unbounded_queue_name_too_long_for_its_rings_is_refused_as_given() {
    let tag = format!("{}-", std::process::id());
    for len in [188, 217, shmproc::MAX_NAME_LEN] {
        let name = format!("{tag}{}", "q".repeat(len - tag.len()));
        match shmproc::Queue::<String>::create(&name, 0) {
            Err(shmproc::OpenError::InvalidName { name: given, reason }) => {
                assert_eq!(given, name, "the name in the error is the one given");
                assert!(reason.contains("187"), "{len} bytes: {reason}");
            }
            other => panic!("{len} bytes: {:?}", other.map(|q| q.name().len())),
        }
    }
    let name = format!("{tag}{}", "q".repeat(187 - tag.len()));
    let sut = shmproc::JoinableQueue::<String>::create(&name, 0).unwrap();
    for i in 0..3000 {
        sut.put(format!("{i:0>300}")).unwrap();
    }
    assert_eq!(
        shmproc::JoinableQueue::<String>::open(&name).unwrap().get_timeout(DEADLINE).unwrap(),
        format!("{:0>300}", 0)
    );
}
