"""multiprocessing.Queue throughput: one producer process puts N ints (or,
with "str64", N strings of the same 64 characters), this process gets
them. Prints "<msgs per second>".

Usage: python3 benches/python_queue.py N [str64]
"""
import multiprocessing as mp
import sys
import time


ITEM = "x" * 64


def produce(q, n):
    for i in range(n):
        q.put(i)


def produce_strings(q, n):
    for _ in range(n):
        q.put(ITEM)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    strings = len(sys.argv) > 2 and sys.argv[2] == "str64"
    q = mp.Queue(maxsize=4096)
    p = mp.Process(target=produce_strings if strings else produce, args=(q, n))
    t = time.perf_counter()
    p.start()
    total = 0
    for _ in range(n):
        total += len(q.get()) if strings else q.get()
    elapsed = time.perf_counter() - t
    p.join()
    assert total == (64 * n if strings else n * (n - 1) // 2)
    print(n / elapsed, flush=True)
