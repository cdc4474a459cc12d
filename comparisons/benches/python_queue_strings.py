"""multiprocessing.Queue throughput with 64-byte strings: one producer
process puts N strings (the same 64 characters each time, as the Rust
side), this process gets them. Prints "<msgs per second>".

Usage: python3 benches/python_queue_strings.py N
"""
import multiprocessing as mp
import sys
import time

ITEM = "x" * 64


def produce(q, n):
    for _ in range(n):
        q.put(ITEM)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    q = mp.Queue(maxsize=4096)
    p = mp.Process(target=produce, args=(q, n))
    t = time.perf_counter()
    p.start()
    total = 0
    for _ in range(n):
        total += len(q.get())
    elapsed = time.perf_counter() - t
    p.join()
    assert total == 64 * n
    print(n / elapsed, flush=True)
