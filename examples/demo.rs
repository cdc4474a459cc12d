//! The shmproc demo: a three-process pipeline over shared-memory queues,
//! then round-trip latency, each next to a Unix-socket baseline.
//!
//! generator process --SPSC--> doubler process --SPSC--> this process
//!
//! Run: `cargo run --release --example demo`. With `SHMPROC_BENCH_QUICK=1`
//! (what CI's smoke run sets) it moves 200 000 values and 2 000 pings
//! instead of 5 million and 20 000: the same checks, no meaningful figures.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use shmproc::Process;
use shmproc::queue::SpscQueue;

/// Values through the pipeline (the children read the same variable).
fn n() -> u64 {
    if quick() { 200_000 } else { 5_000_000 }
}

/// Round trips timed.
fn pings() -> u32 {
    if quick() { 2_000 } else { 20_000 }
}

fn quick() -> bool {
    std::env::var_os("SHMPROC_BENCH_QUICK").is_some()
}

shmproc::entry! {
    /// Stage 1: emits 0..n().
    fn generate(out: SpscQueue<u64>) -> Result<(), String> {
        let mut tx = out.producer().map_err(|e| e.to_string())?;
        for i in 0..n() {
            tx.push(i).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

shmproc::entry! {
    /// Stage 2: doubles every value until its input is disconnected.
    fn double(args: (SpscQueue<u64>, SpscQueue<u64>)) -> Result<(), String> {
        let (inp, out) = args;
        let mut rx = inp.consumer().map_err(|e| e.to_string())?;
        let mut tx = out.producer().map_err(|e| e.to_string())?;
        while let Ok(v) = rx.pop() {
            tx.push(v * 2).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

shmproc::entry! {
    /// Echoes 8-byte messages on a Unix socket (the baseline).
    fn socket_echo(fd_path: String) -> Result<(), String> {
        let mut s = UnixStream::connect(&fd_path).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 8];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

shmproc::entry! {
    /// Echoes u64 values on a pipe until it closes.
    fn pipe_echo(mut conn: shmproc::Connection) {
        while let Ok(v) = conn.recv::<u64>() {
            if conn.send(&v).is_err() {
                break;
            }
        }
    }
}

fn pipeline() -> Result<f64, Box<dyn std::error::Error>> {
    let (a, b) = (SpscQueue::<u64>::new(4096)?, SpscQueue::<u64>::new(4096)?);
    let mut rx = b.consumer()?;
    let t = Instant::now();
    let mut stage1 = Process::new(generate, a.clone());
    let mut stage2 = Process::new(double, (a.clone(), b.clone()));
    stage1.start()?;
    stage2.start()?;
    let mut sum = 0u64;
    let mut buf = [0u64; 256];
    let mut got = 0;
    let n = n();
    while got < n {
        let k = rx.pop_into(&mut buf);
        if k == 0 {
            // Nothing ready: block for one (or learn the pipeline ended).
            let v = rx.pop()?;
            sum = sum.wrapping_add(v);
            got += 1;
            continue;
        }
        sum = buf[..k].iter().fold(sum, |s, &v| s.wrapping_add(v));
        got += k as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    stage1.join()?;
    stage2.join()?;
    assert_eq!(sum, n * (n - 1), "the pipeline lost or changed values");
    Ok(n as f64 / secs)
}

fn socket_pipeline() -> Result<f64, Box<dyn std::error::Error>> {
    let (mut a, mut b) = UnixStream::pair()?;
    let m = n() / 10;
    let t = Instant::now();
    let writer = std::thread::spawn(move || {
        for i in 0..m {
            b.write_all(&i.to_le_bytes()).unwrap();
        }
    });
    let mut buf = [0u8; 8];
    for _ in 0..m {
        a.read_exact(&mut buf)?;
    }
    writer.join().unwrap();
    Ok(m as f64 / t.elapsed().as_secs_f64())
}

fn median_rtt(mut rtts: Vec<Duration>) -> Duration {
    rtts.sort();
    rtts[rtts.len() / 2]
}

fn pipe_rtt() -> Result<Duration, Box<dyn std::error::Error>> {
    let (mut here, there) = shmproc::pipe(true)?;
    let mut p = Process::new(pipe_echo, there);
    p.start()?;
    let mut rtts = Vec::with_capacity(pings() as usize);
    for i in 0..u64::from(pings()) {
        let t = Instant::now();
        here.send(&i)?;
        assert_eq!(here.recv::<u64>()?, i);
        rtts.push(t.elapsed());
    }
    here.close();
    p.join()?;
    Ok(median_rtt(rtts))
}

fn socket_rtt() -> Result<Duration, Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("shmproc-demo-{}.sock", std::process::id()));
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    let mut p = Process::new(socket_echo, path.to_string_lossy().into_owned());
    p.start()?;
    let (mut s, _) = listener.accept()?;
    let _ = std::fs::remove_file(&path);
    let mut rtts = Vec::with_capacity(pings() as usize);
    let mut buf = [0u8; 8];
    for i in 0..u64::from(pings()) {
        let t = Instant::now();
        s.write_all(&i.to_le_bytes())?;
        s.read_exact(&mut buf)?;
        rtts.push(t.elapsed());
    }
    drop(s);
    p.join()?;
    Ok(median_rtt(rtts))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("shmproc demo: generator -> doubler -> collector, three processes, {} u64 messages", n());
    let ours = pipeline()?;
    let sock = socket_pipeline()?;
    println!("  shmproc SPSC pipeline  {:>8.2} M msgs/s", ours / 1e6);
    println!("  Unix socket (8-byte)   {:>8.2} M msgs/s   (one hop, two threads)", sock / 1e6);
    println!("round trip, median of {}:", pings());
    println!("  shmproc Pipe           {:>8?}", pipe_rtt()?);
    println!("  Unix socket            {:>8?}", socket_rtt()?);
    Ok(())
}
