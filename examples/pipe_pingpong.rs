//! Two processes play ping-pong over a Pipe and report the round trip.
//!
//! Run: `cargo run --release --example pipe_pingpong`

use std::time::Instant;

use shmproc::{Connection, ConnectionError, PipeRecvBytesError, Process};

const ROUNDS: u32 = 10_000;

shmproc::entry! {
    /// Answers every "ping" with "pong" until the other end closes.
    fn ponger(mut conn: Connection) -> Result<(), ConnectionError> {
        loop {
            match conn.recv_bytes() {
                Ok(msg) if msg == b"ping" => conn.send_bytes(b"pong")?,
                Ok(other) => panic!("unexpected message {other:?}"),
                Err(PipeRecvBytesError::Disconnected) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut here, there) = shmproc::pipe(true)?;
    let mut p = Process::new(ponger, there);
    p.start()?;
    let t = Instant::now();
    for _ in 0..ROUNDS {
        here.send_bytes(b"ping")?;
        assert_eq!(here.recv_bytes()?, b"pong");
    }
    let rtt = t.elapsed() / ROUNDS;
    println!("{ROUNDS} ping-pongs over a shmproc Pipe: {rtt:?} per round trip");
    here.close(); // the ponger sees Disconnected and returns
    p.join()?;
    Ok(())
}
