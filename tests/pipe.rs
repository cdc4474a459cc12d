//! Variable-length frames and pipes across real processes.

use std::time::{Duration, Instant};

use shmproc::queue::ByteQueue;
use shmproc::{Connection, ConnectionError, Event, Process};
use shmproc::{RecvError, TrySendError};

const MAX_FRAME: u64 = 3000;
const FRAMES: u32 = 20_000;

/// Deterministic sizes and contents both sides can compute.
fn frame(seq: u32) -> Vec<u8> {
    let mut x = seq.wrapping_mul(2_654_435_761) ^ 0x9E37_79B9;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    let len = (x as u64 % (MAX_FRAME + 1)) as usize;
    (0..len).map(|i| (seq as usize * 31 + i * 7) as u8).collect()
}

shmproc::entry! {
    fn send_frames(q: ByteQueue) -> Result<(), String> {
        let mut tx = q.producer().map_err(|e| e.to_string())?;
        for seq in 0..FRAMES {
            tx.send(&frame(seq)).map_err(|e| e.to_string())?;
        }
        // Also the edge sizes.
        tx.send(&[]).map_err(|e| e.to_string())?;
        tx.send(&vec![0xAB; MAX_FRAME as usize]).map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[test]
fn frames_of_random_sizes_arrive_intact_across_processes() {
    let q = ByteQueue::new(16 * 1024, MAX_FRAME).unwrap();
    let mut rx = q.consumer().unwrap();
    let mut p = Process::new(send_frames, q.clone());
    p.start().unwrap();
    let mut buf = Vec::new();
    for seq in 0..FRAMES {
        rx.recv_timeout_into(&mut buf, Duration::from_secs(30)).unwrap();
        assert_eq!(buf, frame(seq), "frame {seq}");
    }
    assert_eq!(rx.recv().unwrap(), Vec::<u8>::new());
    assert_eq!(rx.recv().unwrap(), vec![0xAB; MAX_FRAME as usize]);
    p.join().unwrap();
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
}

#[test]
fn oversized_frames_and_bad_sizes_are_clear_errors() {
    let q = ByteQueue::new(4096, 100).unwrap();
    let mut tx = q.producer().unwrap();
    assert_eq!(tx.try_send(&[0; 101]), Err(TrySendError::TooLarge { len: 101, max: 100 }));
    assert!(ByteQueue::new(4096, 3000).is_err(), "frame limit above half the ring");
    assert!(ByteQueue::new(1000, 10).is_err(), "not a power of two");
    assert!(ByteQueue::new(32, 4).is_err(), "too small");
}

#[test]
fn a_corrupted_frame_header_is_reported_not_followed() {
    let q = ByteQueue::new(4096, 100).unwrap();
    let mut tx = q.producer().unwrap();
    let mut rx = q.consumer().unwrap();
    tx.send(b"hello").unwrap();
    // A hostile peer overwrites the published header with a huge length.
    // Data starts after the 128-byte header and the 384-byte control block.
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/shmproc.{}", q.name())).unwrap();
    f.seek(SeekFrom::Start(512)).unwrap();
    f.write_all(&99_999u32.to_le_bytes()).unwrap();
    assert_eq!(rx.recv(), Err(RecvError::Corrupted));
}

shmproc::entry! {
    /// Echoes every message back, doubled, until the other end goes away.
    fn echo_doubled(mut conn: Connection) -> Result<(), String> {
        loop {
            match conn.recv::<u64>() {
                Ok(v) => conn.send(&(v * 2)).map_err(|e| e.to_string())?,
                Err(ConnectionError::Disconnected) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

#[test]
fn pipe_ping_pong_across_processes() {
    let (mut a, b) = shmproc::pipe(true).unwrap();
    let mut p = Process::new(echo_doubled, b);
    p.start().unwrap();
    for v in 0..1000u64 {
        a.send(&v).unwrap();
        assert_eq!(a.recv::<u64>().unwrap(), v * 2);
    }
    assert!(!a.poll(Duration::from_millis(1)).unwrap());
    a.close();
    p.join().unwrap();
}

shmproc::entry! {
    fn hold_pipe_end(args: (Connection, Event)) {
        let (mut conn, ready) = args;
        conn.send(&1u8).unwrap();
        ready.set();
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn a_killed_peer_gives_disconnected_after_draining() {
    let (mut a, b) = shmproc::pipe(true).unwrap();
    let ready = Event::new().unwrap();
    let mut p = Process::new(hold_pipe_end, (b, ready.clone())).with_daemon(true);
    p.start().unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(30)));
    p.kill().unwrap();
    let t = Instant::now();
    assert_eq!(a.recv::<u8>().unwrap(), 1, "what was sent before death is delivered");
    assert_eq!(a.recv::<u8>(), Err(ConnectionError::Disconnected));
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    let _ = p.join();
}

#[test]
fn one_way_pipes_refuse_the_wrong_direction() {
    let (mut r, mut w) = shmproc::pipe(false).unwrap();
    assert_eq!(r.send(&1u8), Err(ConnectionError::NotWritable));
    assert_eq!(w.recv::<u8>(), Err(ConnectionError::NotReadable));
    w.send(&5u8).unwrap();
    assert_eq!(r.recv::<u8>(), Ok(5));
}

mod model {
    use std::collections::VecDeque;

    use proptest::prelude::*;
    use shmproc::queue::ByteQueue;
    use shmproc::{TryRecvError, TrySendError};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The byte ring behaves like a VecDeque of frames: FIFO, frames
        /// intact, nothing lost or duplicated; a refused send is `Full`
        /// only when the ring really has no room for it.
        #[test]
        fn byte_queue_matches_a_vecdeque_model(ops in proptest::collection::vec((any::<bool>(), 0usize..=120), 0..300)) {
            let q = ByteQueue::new(512, 120).unwrap();
            let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut buf = Vec::new();
            for (i, (send, len)) in ops.into_iter().enumerate() {
                if send {
                    let frame: Vec<u8> = (0..len).map(|j| (i * 13 + j) as u8).collect();
                    match tx.try_send(&frame) {
                        Ok(()) => model.push_back(frame),
                        Err(e) => {
                            prop_assert_eq!(e, TrySendError::Full);
                            // Full means no room: queued frames (8-byte header,
                            // 8-byte padding) plus at most one pending wrap gap
                            // (< one max frame, 128 B) plus this frame and its
                            // own wrap gap (< the frame) exceed the ring.
                            let used: usize = model.iter().map(|f| 8 + f.len().div_ceil(8) * 8).sum();
                            let need = 8 + len.div_ceil(8) * 8;
                            prop_assert!(used + 128 + 2 * need > 512, "refused with {} bytes used", used);
                        }
                    }
                } else {
                    match rx.try_recv_into(&mut buf) {
                        Ok(()) => prop_assert_eq!(Some(&buf), model.front()),
                        Err(e) => {
                            prop_assert_eq!(e, TryRecvError::Empty);
                            prop_assert!(model.is_empty());
                            continue;
                        }
                    }
                    model.pop_front();
                }
            }
        }
    }
}
