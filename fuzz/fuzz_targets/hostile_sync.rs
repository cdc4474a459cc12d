//! A process using a sync object (or a `Value` / `Array`) whose segment a
//! hostile or buggy peer overwrote with arbitrary bytes: no panic, no UB,
//! no wait past its deadline — only errors, refusals or garbage values.
//!
//! Each run builds one object, lets the "peer" overwrite bytes of its
//! segment file (the header and the control block: lock owner words,
//! counters, waiter counts, generations, levels), then runs every
//! operation that cannot block for ever (`try_` forms, waits with a 1 ms
//! deadline, setters, notifies, resets) and a fresh `open` (which must
//! validate, not trust). In the concurrent mode the peer writes while the
//! operations run, so every check also meets fields that change between
//! two reads. libFuzzer's `-timeout` catches a wait that outlives its
//! deadline.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;

#[path = "peer.rs"]
mod peer;
use shmproc::{Array, Barrier, BoundedSemaphore, Condition, Event, Lock, Options, RLock, Semaphore, Value};

const MS: Duration = Duration::from_millis(1);

/// Opening must not wait long for a READY that a scribble erased.
fn opts() -> Options {
    Options::new().init_timeout(Duration::ZERO)
}

/// The hostile peer: 8-byte writes at even offsets within the first 512
/// bytes (the header and the control block).
fn hostile(name: &str, data: &[u8], concurrent: bool, ops: impl FnMut()) {
    peer::hostile(data, concurrent, 27, |d| peer::scribble_at(name, d, 2), ops);
    // A scribble may have set the segment's persist flag, which its
    // creator's drop honours (as `gc` does): remove the name here.
    let _ = shmproc::unlink(name);
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else { return };
    let concurrent = which & 0x80 != 0;
    match which % 9 {
        0 => {
            let l = Lock::new().unwrap();
            hostile(l.name(), data, concurrent, || {
                drop(l.try_lock());
                drop(l.lock_timeout(MS));
                let _ = l.is_locked();
                let _ = Lock::open_with(l.name(), &opts()).map(|o| o.is_locked());
            });
        }
        1 => {
            let l = RLock::new().unwrap();
            hostile(l.name(), data, concurrent, || {
                if let Ok(g) = l.try_lock() {
                    drop(l.lock_timeout(MS));
                    drop(g);
                }
                let _ = (l.level(), l.is_owned(), l.release());
                let _ = RLock::open_with(l.name(), &opts()).map(|o| o.level());
            });
        }
        2 => {
            let s = Semaphore::new(2).unwrap();
            hostile(s.name(), data, concurrent, || {
                let _ = s.try_acquire();
                let _ = s.acquire_timeout(MS);
                let _ = s.release();
                let _ = s.release_n(3);
                let _ = s.get_value();
                let _ = Semaphore::open_with(s.name(), &opts()).map(|o| o.get_value());
            });
        }
        3 => {
            let s = BoundedSemaphore::new(1).unwrap();
            hostile(s.name(), data, concurrent, || {
                let _ = s.try_acquire();
                let _ = s.acquire_timeout(MS);
                let _ = s.release();
                let _ = (s.get_value(), s.bound());
                let _ = BoundedSemaphore::open_with(s.name(), &opts()).map(|o| o.bound());
            });
        }
        4 => {
            let e = Event::new().unwrap();
            hostile(e.name(), data, concurrent, || {
                let _ = e.wait_timeout(MS);
                e.set();
                let _ = e.is_set();
                e.clear();
                let _ = e.wait_timeout(MS);
                let _ = Event::open_with(e.name(), &opts()).map(|o| o.is_set());
            });
        }
        5 => {
            let c = Condition::new().unwrap();
            hostile(c.name(), data, concurrent, || {
                if let Ok(mut g) = c.lock_timeout(MS) {
                    c.notify(&g, 1);
                    c.notify_all(&g);
                    let _ = c.wait_timeout(&mut g, MS);
                    let _ = c.wait_for_timeout(&mut g, MS, || false);
                }
                drop(c.try_lock());
                let _ = c.is_locked();
                let _ = Condition::open_with(c.name(), &opts()).map(|o| o.is_locked());
            });
        }
        6 => {
            let b = Barrier::new(2).unwrap();
            hostile(b.name(), data, concurrent, || {
                let _ = b.wait_timeout(MS);
                let _ = (b.parties(), b.n_waiting(), b.is_broken());
                b.reset();
                let _ = b.wait_timeout(MS);
                b.abort();
                b.reset();
                let _ = Barrier::open_with(b.name(), &opts()).map(|o| o.n_waiting());
            });
        }
        7 => {
            let v = Value::<u64>::new(7).unwrap();
            hostile(v.name(), data, concurrent, || {
                let _ = v.get();
                let _ = v.set(9);
                if let Ok(mut g) = v.try_get_lock() {
                    let _ = g.value();
                    g.set_value(3);
                }
                drop(v.get_lock_timeout(MS));
                let _ = Value::<u64>::open_with(v.name(), &opts()).map(|o| o.get());
            });
        }
        _ => {
            let a = Array::<u32>::new(8).unwrap();
            hostile(a.name(), data, concurrent, || {
                let _ = a.get(3);
                let _ = a.set(5, 1);
                let _ = a.get(100);
                let _ = a.to_vec();
                if let Ok(mut g) = a.try_get_lock() {
                    let mut out = [0u32; 16];
                    let _ = g.read(2, &mut out);
                    let _ = g.write(6, &[1, 2, 3, 4]);
                    let _ = g.to_vec();
                }
                drop(a.get_lock_timeout(MS));
                let _ = Array::<u32>::open_with(a.name(), &opts()).map(|o| o.len());
            });
        }
    }
});
