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

/// Opens the service and makes a publisher that blocks when the
/// subscriber's buffer is full.
fn publisher(node: &Node<ipc::Service>, name: &ServiceName) -> Pub {
    let service = node.service_builder(name).publish_subscribe::<u64>().open().unwrap();
    service.publisher_builder().unable_to_deliver_strategy(UnableToDeliverStrategy::Block).create().unwrap()
}

fn wait_for(flag: &AtomicU32, value: u32) {
    while flag.load(Ordering::Acquire) < value {
        std::thread::yield_now();
    }
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
                if let Some(s) = sub.receive().unwrap() {
                    t0.get_or_insert_with(Instant::now);
                    sum = sum.wrapping_add(*s);
                    got += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            elapsed = t0.unwrap().elapsed();
            assert_eq!(sum, n * (n - 1) / 2, "iceoryx2 lost or duplicated samples");
        },
        || {
            wait_for(ready, 1);
            let node = node();
            let publisher = publisher(&node, &name);
            for i in 0..n {
                assert_eq!(publisher.send_copy(i).unwrap(), 1, "no subscriber connected");
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
                tx.send_copy(i).unwrap();
                let v = loop {
                    if let Some(s) = rx.receive().unwrap() {
                        break *s;
                    }
                    std::hint::spin_loop();
                };
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
                let v = loop {
                    if let Some(s) = rx.receive().unwrap() {
                        break *s;
                    }
                    std::hint::spin_loop();
                };
                tx.send_copy(v).unwrap();
            }
        },
    );
    percentiles(samples)
}
