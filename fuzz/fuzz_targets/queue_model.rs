//! Random operation sequences on every queue, checked against a VecDeque
//! model: FIFO, nothing lost, nothing duplicated, len/empty/full consistent.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use shmproc::queue::{ByteQueue, MpmcQueue, SpscQueue};
use shmproc::{TryGetError, TryPushError, TryPutError, TrySendError};

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, ops)) = data.split_first() else { return };
    let cap = 1usize << (cfg % 5 + 1); // 2..=32
    spsc(cap, ops);
    mpmc((cfg as usize % 11) + 1, ops);
    bytes(ops);
});

fn spsc(cap: usize, ops: &[u8]) {
    let q = SpscQueue::<u16>::new(cap as u64).unwrap();
    let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    let mut model = VecDeque::new();
    let mut next = 0u16;
    for &op in ops {
        match op % 4 {
            0 => {
                let r = tx.try_push(next);
                if model.len() < cap {
                    assert!(r.is_ok());
                    model.push_back(next);
                } else {
                    assert_eq!(r, Err(TryPushError::Full(next)));
                }
                next = next.wrapping_add(1);
            }
            1 => assert_eq!(rx.try_pop().ok(), model.pop_front()),
            2 => {
                let k = (op / 4) as usize % (cap + 2);
                let items: Vec<u16> = (0..k as u16).map(|i| next.wrapping_add(i)).collect();
                let n = tx.push_slice(&items);
                assert_eq!(n, k.min(cap - model.len()));
                model.extend(&items[..n]);
                next = next.wrapping_add(n as u16);
            }
            _ => {
                let mut out = vec![0u16; (op / 4) as usize % (cap + 2)];
                let n = rx.pop_into(&mut out);
                assert_eq!(n, out.len().min(model.len()));
                for v in &out[..n] {
                    assert_eq!(Some(*v), model.pop_front());
                }
            }
        }
        assert_eq!(q.len(), model.len());
    }
}

fn mpmc(cap: usize, ops: &[u8]) {
    let q = MpmcQueue::<u32>::new(cap as u64).unwrap();
    let mut model = VecDeque::new();
    for (i, &op) in ops.iter().enumerate() {
        let v = (i as u32) << 8;
        match op % 4 {
            0 => match q.try_push(v) {
                Ok(()) => model.push_back(v),
                Err(e) => {
                    assert_eq!(model.len(), cap);
                    assert_eq!(e, TryPutError::Full(v));
                }
            },
            1 => match q.try_pop() {
                Ok(got) => assert_eq!(Some(got), model.pop_front()),
                Err(e) => {
                    assert!(model.is_empty());
                    assert_eq!(e, TryGetError::Empty);
                }
            },
            // Batches, mixed with the single operations.
            2 => {
                let k = (op / 4) as usize % (cap + 3);
                let items: Vec<u32> = (0..k as u32).map(|j| v | j).collect();
                let n = q.push_slice(&items);
                assert_eq!(n, k.min(cap - model.len()));
                model.extend(&items[..n]);
            }
            _ => {
                let mut out = vec![0u32; (op / 4) as usize % (cap + 3)];
                let n = q.pop_into(&mut out);
                assert_eq!(n, out.len().min(model.len()));
                for got in &out[..n] {
                    assert_eq!(Some(*got), model.pop_front());
                }
            }
        }
        assert_eq!(q.len(), model.len());
        assert_eq!(q.is_full(), model.len() == cap);
    }
}

/// The byte ring against a VecDeque of frames. Ops (low 3 bits): copy
/// send, loan send committed, loan send dropped (nothing sent), copy
/// receive, loan receive released, loan receive dropped (received again);
/// the high bits pick the length. Payloads of 64 bytes or more read in
/// place are 64-aligned.
fn bytes(ops: &[u8]) {
    let q = ByteQueue::new(512, 120).unwrap();
    let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    let mut buf = Vec::new();
    for (i, &op) in ops.iter().enumerate() {
        let frame: Vec<u8> = (0..(op as usize >> 3) * 4 % 121).map(|j| (i + j) as u8).collect();
        match op & 7 {
            0 | 6 => match tx.try_send(&frame) {
                Ok(()) => model.push_back(frame),
                Err(e) => assert_eq!(e, TrySendError::Full),
            },
            1 | 2 => match tx.try_send_loan(frame.len()) {
                Ok(mut loan) => {
                    assert_eq!(loan.len(), frame.len());
                    loan.write_at(0, &frame);
                    if op & 7 == 1 {
                        loan.commit().unwrap();
                        model.push_back(frame);
                    }
                }
                Err(e) => assert_eq!(e, TrySendError::Full),
            },
            3 | 7 => match rx.try_recv_into(&mut buf) {
                Ok(()) => assert_eq!(Some(&buf), model.pop_front().as_ref()),
                Err(e) => assert!(model.is_empty(), "{e:?} with {} frames queued", model.len()),
            },
            k => match rx.try_recv_loan() {
                Ok(loan) => {
                    assert_eq!(Some(&loan.to_vec()), model.front());
                    if loan.len() >= shmproc::queue::ALIGN_FROM {
                        assert_eq!(loan.as_ptr() as usize % 64, 0);
                    }
                    if k == 4 {
                        loan.release();
                        model.pop_front();
                    }
                }
                Err(e) => assert!(model.is_empty(), "{e:?} with {} frames queued", model.len()),
            },
        }
    }
}
