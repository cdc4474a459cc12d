//! The iceoryx2 anchor: publish-subscribe of `u64` between two processes
//! (the publisher forked, pinned to the other core), configured so that
//! nothing is lost: no safe overflow, a blocking publisher.
//!
//! Each process makes its own node and ports after the fork (iceoryx2 ties
//! a node to its process), and every iceoryx2 object is dropped before a
//! closure returns so its files leave /dev/shm.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;

use crate::support::{SharedPage, mps, percentiles, run_pair};

type Pub = Publisher<ipc::Service, u64, ()>;
type Sub = Subscriber<ipc::Service, u64, ()>;

fn node() -> Node<ipc::Service> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new().signal_handling_mode(SignalHandlingMode::Disabled).create::<ipc::Service>().unwrap()
}

/// A service name unique to this bench process and call.
fn service_name(what: &str) -> ServiceName {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let k = CALLS.fetch_add(1, Ordering::Relaxed);
    format!("shmproc-bench/{}/{what}/{k}", std::process::id()).as_str().try_into().unwrap()
}

/// Creates the service (no overflow, `buffer` deep) and subscribes to it.
fn subscriber(node: &Node<ipc::Service>, name: &ServiceName, buffer: usize) -> Sub {
    let service = node
        .service_builder(name)
        .publish_subscribe::<u64>()
        .enable_safe_overflow(false)
        .subscriber_max_buffer_size(buffer)
        .history_size(0)
        .max_publishers(1)
        .max_subscribers(1)
        .create()
        .unwrap();
    service.subscriber_builder().buffer_size(buffer).create().unwrap()
}

/// How long an anchor waits without progress before it fails (instead of
/// hanging the bench run).
const STALL: Duration = Duration::from_secs(30);

/// Opens the service and makes a publisher that blocks when the
/// subscriber's buffer is full.
fn publisher(node: &Node<ipc::Service>, name: &ServiceName) -> Pub {
    let service = node.service_builder(name).publish_subscribe::<u64>().open().unwrap();
    service.publisher_builder().unable_to_deliver_strategy(UnableToDeliverStrategy::Block).create().unwrap()
}

fn wait_for(flag: &AtomicU32, value: u32) {
    let since = Instant::now();
    while flag.load(Ordering::Acquire) < value {
        assert!(since.elapsed() < STALL, "iceoryx2 anchor: the peer never got ready");
        std::thread::yield_now();
    }
}

/// Sends `v`, again while no subscriber is connected yet (0 recipients).
fn deliver(publisher: &Pub, v: u64) {
    let since = Instant::now();
    while publisher.send_copy(v).unwrap() == 0 {
        assert!(since.elapsed() < STALL, "iceoryx2 anchor: no subscriber connected");
        std::thread::yield_now();
    }
}

/// Busy-polls for the next sample (fails after STALL without one).
/// The clock is read only after 4096 empty polls, and then every 4096,
/// so the check does not slow the anchor down.
fn take(sub: &Sub) -> u64 {
    let mut since = None;
    for spins in 1u64.. {
        if let Some(s) = sub.receive().unwrap() {
            return *s;
        }
        if spins % 4096 == 0 {
            let t: &mut Instant = since.get_or_insert_with(Instant::now);
            assert!(t.elapsed() < STALL, "iceoryx2 anchor: no sample for {STALL:?}");
        }
        std::hint::spin_loop();
    }
    unreachable!()
}

/// `n` u64 from the child's publisher to our subscriber; M msgs/s, timed
/// from the first sample received to the last (set-up excluded).
pub fn throughput(n: u64, buffer: usize) -> f64 {
    let name = service_name("tp");
    let page = SharedPage::new(4096);
    let ready = page.flag(0);
    let mut elapsed = Duration::ZERO;
    run_pair(
        || {
            let node = node();
            let sub = subscriber(&node, &name, buffer);
            ready.store(1, Ordering::Release); // pairs with the child's wait_for
            let (mut got, mut sum) = (0u64, 0u64);
            let mut t0 = None;
            while got < n {
                // Never hang a bench run: `take` fails when a publisher that
                // failed sends nothing more.
                let v = take(&sub);
                t0.get_or_insert_with(Instant::now);
                sum = sum.wrapping_add(v);
                got += 1;
            }
            elapsed = t0.unwrap().elapsed();
            assert_eq!(sum, n * (n - 1) / 2, "iceoryx2 lost or duplicated samples");
        },
        || {
            wait_for(ready, 1);
            let node = node();
            let publisher = publisher(&node, &name);
            for i in 0..n {
                // The subscriber may not be connected yet (0 recipients):
                // send the same value again until it is delivered.
                deliver(&publisher, i);
            }
        },
    );
    // The first sample is not in the timed span.
    mps(n - 1, elapsed)
}

/// Busy-polling ping-pong over two services; (p50, p99) round trip in ns.
pub fn pingpong(n: usize) -> (f64, f64) {
    let (there, back) = (service_name("ping"), service_name("pong"));
    let page = SharedPage::new(4096);
    let ready = page.flag(0);
    let mut samples = Vec::with_capacity(n);
    run_pair(
        || {
            let node = node();
            let rx = subscriber(&node, &back, 4);
            ready.store(1, Ordering::Release); // pairs with the child's wait_for(1)
            wait_for(ready, 2); // the child subscribed to `there`
            let tx = publisher(&node, &there);
            for i in 0..n as u64 {
                let t = Instant::now();
                deliver(&tx, i);
                let v = take(&rx);
                assert_eq!(v, i);
                samples.push(t.elapsed().as_nanos() as f64);
            }
        },
        || {
            wait_for(ready, 1);
            let node = node();
            let rx = subscriber(&node, &there, 4);
            ready.store(2, Ordering::Release); // pairs with the parent's wait_for(2)
            let tx = publisher(&node, &back);
            for _ in 0..n {
                let v = take(&rx);
                deliver(&tx, v);
            }
        },
    );
    percentiles(samples)
}
