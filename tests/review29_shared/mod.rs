//! Helpers of the review 29 tests (`review29.rs`: a full /dev/shm;
//! `review29_limits.rs`: no descriptor or address space left): every
//! kind's maker, one-page fillers, resource limits, children.

#![allow(dead_code)]

use std::time::Duration;

use shmproc::queue::{ByteQueue, MpmcQueue, SpscQueue};
use shmproc::{
    Array, Barrier, BoundedSemaphore, Condition, DictProxy, Event, JoinableQueue, ListProxy, Lock, Manager, Queue,
    RLock, RawSegment, Semaphore, SimpleQueue, Value,
};

use crate::common;

/// Fills /dev/shm with one-page segments only, so that dropping `k` of
/// them leaves exactly `k` pages of room.
pub fn fill_pages(tag: &str) -> Vec<RawSegment> {
    common::fill_dev_shm(&format!("r29-{tag}"), &[1])
}

pub type Maker = (&'static str, fn() -> Result<(), String>);

pub fn e<E: std::fmt::Debug>(x: E) -> String {
    format!("{x:?}")
}

shmproc::entry! {
    /// Does nothing with its argument (a Process started by a maker).
    pub fn r29_noop(arg: Vec<u8>) -> Result<(), String> {
        if arg.len() == 100_000 { Ok(()) } else { Err("argument".into()) }
    }
}

pub fn makers() -> Vec<Maker> {
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
        ("Process", || {
            let mut p = shmproc::Process::new(r29_noop, vec![1u8; 100_000]);
            p.start().map_err(e)?;
            p.join_timeout(Duration::from_secs(30)).map_err(e)?;
            if p.exitcode() != Some(0) {
                return Err(format!("exit {:?}", p.exitcode()));
            }
            Ok(())
        }),
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

/// The lowest descriptor number free now: a `RLIMIT_NOFILE` of it leaves
/// no descriptor to open.
pub fn open_fds() -> u64 {
    use std::os::fd::AsRawFd;
    std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64
}

pub fn set_limit(resource: libc::__rlimit_resource_t, soft: u64) {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid resource and a pointer to a writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut r) }, 0);
    r.rlim_cur = soft.min(r.rlim_max);
    // SAFETY: as above; lowering or restoring the soft limit under the hard one.
    assert_eq!(unsafe { libc::setrlimit(resource, &r) }, 0);
}

pub fn unlimited(resource: libc::__rlimit_resource_t) {
    set_limit(resource, u64::MAX)
}

/// Runs every maker under `limit(n)` for each `n` of `steps`, the limit
/// lifted again before checking: an error (never a panic), nothing left.
pub fn sweep_limit(resource: libc::__rlimit_resource_t, steps: &[u64], base: impl Fn() -> u64) -> Vec<String> {
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

shmproc::task! { pub fn r29_shout(s: String) -> String { s.to_uppercase() } }
shmproc::task! { pub fn r29_twice(x: u64) -> u64 { x * 2 } }

/// This process's children, started by any of its threads (a Pool's
/// workers are its threads' children).
pub fn children() -> Vec<u32> {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

pub fn wait_no_children(what: &str) {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !children().is_empty() {
        assert!(std::time::Instant::now() < until, "{what}: children left {:?}", children());
        std::thread::sleep(Duration::from_millis(10));
    }
}
