//! `shmproc::wait`'s spin phase (the objects re-checked with plain loads
//! before `wait` announces itself): every kind of object made ready by
//! another process is reported alone, whether the change lands in the
//! spin or in the sleep; a change of an object's words that makes nothing
//! ready does not end the wait; a wait on 40 objects sees each; what was
//! made ready before a reported object is reported with it. Written for
//! a spin that watched words for a change (branch `waitfast2`, measured
//! slower and not kept); they hold for any spin. Every blocking call has
//! a deadline.

mod common;

use std::time::Duration;

use shmproc::queue::{ByteQueue, MpmcQueue, SpscQueue};
use shmproc::{Connection, Event, Process, Queue, Semaphore, Waitable, wait};

use common::DEADLINE;

fn indices(objects: &mut [&mut dyn Waitable], timeout: Option<Duration>) -> Vec<usize> {
    wait(objects, timeout).unwrap().iter().collect()
}

/// The objects of `each_kind_made_ready_by_another_process_is_reported_alone`,
/// as the child sees them.
type Peer =
    ((Event, Semaphore, Queue<u32>, MpmcQueue<u32>), (SpscQueue<u32>, ByteQueue, Connection, Queue<u32>), Event);

/// How many kinds the child makes ready in turn (the process itself, its
/// end, comes last).
const KINDS: u32 = 8;

shmproc::entry! {
    fn make_ready_in_turn(args: (Peer, u32)) -> Result<(), String> {
        let (((ev, sem, q, mq), (spsc, bq, mut conn, unbounded), ack), rounds) = args;
        let e = |x: &dyn std::fmt::Display| x.to_string();
        let mut tx = spsc.producer().map_err(|x| e(&x))?;
        let mut btx = bq.producer().map_err(|x| e(&x))?;
        for r in 0..rounds {
            // A delay from nothing to a few µs, so some changes land in
            // the parent's spin and some after it went to sleep.
            for _ in 0..(r % 7) * 300 {
                std::hint::spin_loop();
            }
            match r % KINDS {
                0 => ev.set(),
                1 => sem.release().map_err(|x| e(&x))?,
                2 => q.put(r).map_err(|x| e(&x))?,
                3 => mq.push(r).map_err(|x| e(&x))?,
                4 => tx.push(r).map_err(|x| e(&x))?,
                5 => btx.send(&r.to_le_bytes()).map_err(|x| e(&x))?,
                6 => conn.send_bytes(&r.to_le_bytes()).map_err(|x| e(&x))?,
                _ => unbounded.put(r).map_err(|x| e(&x))?,
            }
            if !ack.wait_timeout(DEADLINE) {
                return Err(format!("round {r}: never acknowledged"));
            }
            ack.clear();
        }
        Ok(())
    }
}

/// Each kind of object (event, semaphore, bounded queue, MPMC queue, SPSC
/// and byte consumers, pipe end, unbounded queue) and finally the process's end,
/// made ready by another process while `wait` spins or sleeps on all of
/// them: exactly that one is reported.
#[test]
fn each_kind_made_ready_by_another_process_is_reported_alone() {
    let rounds = KINDS * common::count(40, 2000) as u32;
    let (mut ev, mut sem, ack) = (Event::new().unwrap(), Semaphore::new(0).unwrap(), Event::new().unwrap());
    let mut q = Queue::<u32>::new(4).unwrap();
    let mut mq = MpmcQueue::<u32>::new(4).unwrap();
    let spsc = SpscQueue::<u32>::new(4).unwrap();
    let bq = ByteQueue::new(4096, 64).unwrap();
    let (mut end, theirs) = shmproc::pipe(true).unwrap();
    let mut unbounded = Queue::<u32>::new(0).unwrap();
    let peer: Peer = (
        (ev.clone(), sem.clone(), q.clone(), mq.clone()),
        (spsc.clone(), bq.clone(), theirs, unbounded.clone()),
        ack.clone(),
    );
    let mut p = Process::new(make_ready_in_turn, (peer, rounds));
    p.start().unwrap();
    let mut rx = spsc.consumer().unwrap();
    let mut brx = bq.consumer().unwrap();
    for r in 0..rounds {
        let k = (r % KINDS) as usize;
        let got = {
            let mut objs: [&mut dyn Waitable; 9] =
                [&mut ev, &mut sem, &mut q, &mut mq, &mut rx, &mut brx, &mut end, &mut unbounded, &mut p];
            indices(&mut objs, Some(DEADLINE))
        };
        assert_eq!(got, [k], "round {r}: only object {k} was made ready");
        match k {
            0 => ev.clear(),
            1 => assert!(sem.try_acquire(), "round {r}"),
            2 => assert_eq!(q.get_timeout(DEADLINE), Ok(r)),
            3 => assert_eq!(mq.pop_timeout(DEADLINE), Ok(r)),
            4 => assert_eq!(rx.try_pop(), Ok(r)),
            5 => assert_eq!(brx.try_recv().unwrap(), r.to_le_bytes()),
            6 => assert_eq!(end.recv_bytes().unwrap(), r.to_le_bytes()),
            _ => assert_eq!(unbounded.get_timeout(DEADLINE), Ok(r)),
        }
        ack.set();
    }
    // The child returns: its end is ready (and not the queues or the
    // others; the ring ends and the pipe end see their sender gone).
    let mut objs: [&mut dyn Waitable; 6] = [&mut ev, &mut sem, &mut q, &mut mq, &mut unbounded, &mut p];
    assert_eq!(indices(&mut objs, Some(DEADLINE)), [5]);
    common::join(&p).unwrap();
}

/// An MPMC queue's `tail` moves while another
/// consumer takes every item at once, then an event is set: the queue may
/// be reported while an item was there, but once the event is seen the
/// queue is not (the item taken before the event was set is gone).
#[test]
fn a_queue_item_taken_by_another_consumer_is_not_reported_with_the_event() {
    for round in 0..common::count(20, 500) {
        let (mut ev, mut mq) = (Event::new().unwrap(), MpmcQueue::<u32>::new(4).unwrap());
        let (setter, other) = (ev.clone(), mq.clone());
        let t = std::thread::spawn(move || {
            for i in 0..200 {
                other.push(i).unwrap();
                assert_eq!(other.try_pop(), Ok(i));
            }
            setter.set();
        });
        loop {
            let got = indices(&mut [&mut ev, &mut mq], Some(DEADLINE));
            if got.contains(&0) {
                assert_eq!(got, [0], "round {round}: the queue was drained before the event was set");
                break;
            }
            assert_eq!(got, [1], "round {round}: the event is not set yet, the queue was ready");
        }
        t.join().unwrap();
    }
}

/// A semaphore's word changes when an acquirer goes to sleep on it (its
/// sleeper count, in the word's high half): no unit, so not ready; the
/// event set afterwards is reported alone.
#[test]
fn a_sleeper_joining_a_semaphore_does_not_make_it_ready() {
    let (mut sem, mut ev) = (Semaphore::new(0).unwrap(), Event::new().unwrap());
    let (acq, setter) = (sem.clone(), ev.clone());
    let acquirer = std::thread::spawn(move || {
        let tid = common::gettid();
        let t = std::thread::spawn(move || {
            common::wait_until_thread_asleep(tid);
            setter.set();
        });
        assert!(acq.acquire_timeout(DEADLINE), "the unit released below never came");
        t.join().unwrap();
    });
    assert_eq!(indices(&mut [&mut sem, &mut ev], Some(DEADLINE)), [1]);
    sem.release().unwrap();
    acquirer.join().unwrap();
}

/// A wait on 40 events (more than a spin that watches 32 words could
/// watch): whichever is set is reported alone.
#[test]
fn a_wait_on_forty_events_sees_each() {
    let mut evs: Vec<Event> = (0..40).map(|_| Event::new().unwrap()).collect();
    for k in [0, 5, 31, 32, 39] {
        let setter = evs[k].clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1));
            setter.set();
        });
        let got = {
            let mut objs: Vec<&mut dyn Waitable> = evs.iter_mut().map(|e| e as &mut dyn Waitable).collect();
            indices(&mut objs, Some(DEADLINE))
        };
        assert_eq!(got, [k]);
        t.join().unwrap();
        evs[k].clear();
    }
}

/// Another thread readies, in this order, a semaphore, a bounded queue,
/// an MPMC queue, SPSC and byte consumers and a pipe end (64-bit and
/// 32-bit words), then an event; `wait` lists them in the reverse order.
/// Every check (a scan's) of an object comes before the checks of the
/// ones readied before it, so a result that has an object has all those
/// readied before it: `{i, i+1, ..., 6}`. (A spin that re-read words out
/// of list order could leave a hole such as `[0, 6]`; not seen failing,
/// the window is narrow.)
#[test]
fn what_was_ready_before_an_object_is_reported_with_it() {
    for round in 0..common::count(200, 4000) {
        let (mut ev, mut sem) = (Event::new().unwrap(), Semaphore::new(0).unwrap());
        let (mut q, mut mq) = (Queue::<u32>::new(4).unwrap(), MpmcQueue::<u32>::new(4).unwrap());
        let spsc = SpscQueue::<u32>::new(4).unwrap();
        let bq = ByteQueue::new(4096, 64).unwrap();
        let (mut rx, mut brx) = (spsc.consumer().unwrap(), bq.consumer().unwrap());
        let (mut end, mut theirs) = shmproc::pipe(true).unwrap();
        let (ev2, sem2, q2, mq2) = (ev.clone(), sem.clone(), q.clone(), mq.clone());
        let (spsc2, bq2) = (spsc.clone(), bq.clone());
        let t = std::thread::spawn(move || {
            let (mut tx, mut btx) = (spsc2.producer().unwrap(), bq2.producer().unwrap());
            for i in 0..round % 7 * 300 {
                std::hint::spin_loop();
                if i % 97 == 0 {
                    std::thread::yield_now();
                }
            }
            let gap = || {
                for _ in 0..round % 3 * 100 {
                    std::hint::spin_loop();
                }
            };
            sem2.release().unwrap();
            gap();
            q2.put(1).unwrap();
            gap();
            mq2.push(2).unwrap();
            gap();
            tx.push(3).unwrap();
            gap();
            btx.send(b"4").unwrap();
            gap();
            theirs.send_bytes(b"5").unwrap();
            gap();
            ev2.set();
            // Keep the senders until the wait saw everything.
            (tx, btx, theirs)
        });
        loop {
            let got = {
                let mut objs: [&mut dyn Waitable; 7] =
                    [&mut ev, &mut end, &mut brx, &mut rx, &mut mq, &mut q, &mut sem];
                indices(&mut objs, Some(DEADLINE))
            };
            let first = got[0];
            assert_eq!(got, (first..7).collect::<Vec<_>>(), "round {round}: a hole");
            if first == 0 {
                break;
            }
        }
        drop(t.join().unwrap());
    }
}
