"""multiprocessing.Queue throughput: one producer process puts N ints, this
process gets them. Prints "<msgs per second>".

Usage: python3 benches/python_queue.py N
"""
import multiprocessing as mp
import sys
import time


def produce(q, n):
    for i in range(n):
        q.put(i)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    q = mp.Queue(maxsize=4096)
    p = mp.Process(target=produce, args=(q, n))
    t = time.perf_counter()
    p.start()
    total = 0
    for _ in range(n):
        total += q.get()
    elapsed = time.perf_counter() - t
    p.join()
    assert total == n * (n - 1) // 2
    print(n / elapsed, flush=True)
