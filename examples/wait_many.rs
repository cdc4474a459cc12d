//! A parent waits on several workers' result queues and on the workers'
//! deaths at once, like Python's `multiprocessing.connection.wait` on
//! queue readers and process sentinels. Three workers each compute a few
//! squares and put them on their own queue; the third is killed (SIGKILL)
//! once it has sent its first result. The parent handles whatever is
//! ready, as it gets ready, until every worker has ended and every queue
//! is drained, and checks that it got everything the workers sent.
//!
//! Run: `cargo run --release --example wait_many`

use std::time::Duration;

use shmproc::{Event, Process, Queue, Waitable, wait};

const WORKERS: usize = 3;
const ITEMS: u64 = 5;

shmproc::entry! {
    fn worker(args: (u64, Queue<u64>, Event)) -> Result<(), String> {
        let (id, results, hang) = args;
        for i in 0..ITEMS {
            results.put(id * 100 + i * i).map_err(|e| e.to_string())?;
            if id == 2 {
                // Worker 2 hangs after its first result, until it is killed.
                hang.wait_timeout(Duration::from_secs(60));
                return Err("was not killed".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hang = Event::new()?;
    let mut queues: Vec<Queue<u64>> = (0..WORKERS).map(|_| Queue::new(4)).collect::<Result<_, _>>()?;
    let mut workers: Vec<Process> = (0..WORKERS)
        .map(|id| Process::new(worker, (id as u64, queues[id].clone(), hang.clone())).with_name(format!("worker-{id}")))
        .collect();
    for w in &mut workers {
        w.start()?;
    }
    let mut got: Vec<Vec<u64>> = vec![Vec::new(); WORKERS];
    let mut ended = [false; WORKERS];
    while ended.iter().any(|e| !e) || queues.iter().any(|q| !q.empty()) {
        // What we wait on: every queue, and the workers still running (an
        // ended worker stays ready, so it leaves the list, as a sentinel
        // leaves Python's list once handled).
        let mut what: Vec<(bool, usize)> = Vec::new(); // (is a worker, index)
        let mut objects: Vec<&mut dyn Waitable> = Vec::new();
        for (i, q) in queues.iter_mut().enumerate() {
            what.push((false, i));
            objects.push(q);
        }
        for (i, w) in workers.iter_mut().enumerate().filter(|(i, _)| !ended[*i]) {
            what.push((true, i));
            objects.push(w);
        }
        let ready = wait(&mut objects, Some(Duration::from_secs(30)))?;
        drop(objects);
        assert!(!ready.is_empty(), "nothing happened for 30 s");
        for (is_worker, i) in ready.iter().map(|r| what[r]) {
            if is_worker {
                ended[i] = true;
                println!("{} ended: exit code {:?}", workers[i].name(), workers[i].exitcode());
                continue;
            }
            // Ready means an item is there, or claimed by a producer that
            // is writing it: a short bounded wait covers the latter.
            let v = queues[i].get_timeout(Duration::from_secs(30))?;
            println!("worker-{i} sent {v}");
            got[i].push(v);
            if i == 2 && got[2].len() == 1 {
                println!("killing worker-2 (it hangs)");
                workers[2].kill()?;
            }
        }
    }
    for (id, w) in workers.iter().enumerate() {
        let expected: Vec<u64> = (0..if id == 2 { 1 } else { ITEMS }).map(|i| id as u64 * 100 + i * i).collect();
        assert_eq!(got[id], expected, "everything worker-{id} sent, in order");
        assert_eq!(w.exitcode(), Some(if id == 2 { -9 } else { 0 }));
    }
    println!("all results in; worker-2 was killed with SIGKILL and its death woke the wait");
    Ok(())
}
