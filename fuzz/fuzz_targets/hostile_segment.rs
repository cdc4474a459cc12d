//! A consumer reading a segment whose header and indices were overwritten
//! with arbitrary bytes: no panic, no UB, only errors or garbage data.
//!
//! Each run builds a queue, publishes some items, lets a "hostile peer"
//! overwrite bytes of the segment file (header and control block: for the
//! MPMC ring that is its indices, waiter words and first claim records),
//! then exercises every non-blocking read path and a fresh `open` (which
//! must validate, not trust). In the concurrent mode the peer writes its
//! bytes from another thread while the handles operate, so every check
//! also meets fields that change between two reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "peer.rs"]
mod peer;
use shmproc::Options;
use shmproc::queue::{ByteQueue, MpmcQueue, SpscQueue};

/// Opening must not wait long for a READY that a scribble erased.
fn opts() -> Options {
    Options::new().init_timeout(std::time::Duration::ZERO)
}

/// The hostile peer: 8-byte writes at offsets that are multiples of 4
/// within the first KiB (the header and control block).
fn hostile(name: &str, data: &[u8], concurrent: bool, ops: impl FnMut()) {
    peer::hostile(data, concurrent, 27, |d| peer::scribble_at(name, d, 4), ops);
    // A scribble may have set the segment's persist flag, which its
    // creator's drop honours (as `gc` does): remove the name here.
    let _ = shmproc::unlink(name);
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else { return };
    let concurrent = which & 0x80 != 0;
    match which % 3 {
        0 => {
            let q = SpscQueue::<u64>::new(16).unwrap();
            let mut tx = q.producer().unwrap();
            let mut rx = q.consumer().unwrap();
            tx.push_slice(&[1, 2, 3, 4, 5]);
            hostile(q.name(), data, concurrent, || {
                let _ = rx.try_pop();
                let mut out = [0u64; 64];
                let _ = rx.pop_into(&mut out);
                if let Ok(loan) = rx.peek() {
                    let _ = loan.read();
                    loan.release();
                }
                let _ = tx.try_push(9);
                let _ = tx.push_slice(&[7; 40]);
                let _ = q.len();
                let _ = SpscQueue::<u64>::open_with(q.name(), &opts()).map(|o| o.len());
            });
        }
        1 => {
            let q = MpmcQueue::<u32>::new(8).unwrap();
            q.push_slice(&[1, 2, 3]);
            hostile(q.name(), data, concurrent, || {
                let _ = q.try_pop();
                let mut out = [0u32; 32];
                let _ = q.pop_into(&mut out);
                let _ = q.try_push(4);
                let _ = q.push_slice(&[5; 20]);
                let _ = (q.len(), q.is_full());
                let _ = MpmcQueue::<u32>::open_with(q.name(), &opts()).map(|o| o.len());
            });
        }
        _ => {
            let q = ByteQueue::new(256, 64).unwrap();
            let mut tx = q.producer().unwrap();
            let mut rx = q.consumer().unwrap();
            let _ = tx.try_send(b"hello");
            let _ = tx.try_send(&[3; 60]);
            let mut buf = Vec::new();
            hostile(q.name(), data, concurrent, || {
                for _ in 0..4 {
                    let _ = rx.try_recv_into(&mut buf);
                }
                // Loans over frames whose headers a hostile peer wrote:
                // every byte read or written in place is inside the ring.
                if let Ok(loan) = rx.try_recv_loan() {
                    let _ = loan.to_vec();
                    loan.release();
                }
                let _ = tx.try_send(b"again");
                if let Ok(mut loan) = tx.try_send_loan(64) {
                    loan.write_at(0, &[1; 64]);
                    let _ = loan.commit();
                }
                let _ = ByteQueue::open_with(q.name(), &opts()).map(|o| o.max_frame());
            });
        }
    }
});
