"""Median start+join latency of multiprocessing.Process per start method.

Usage: python3 benches/python_process.py N_FORK N_FORKSERVER N_SPAWN
Prints one line per method: "<method> <median seconds>".
"""
import multiprocessing as mp
import statistics
import sys
import time


def noop():
    pass


def measure(method, n):
    ctx = mp.get_context(method)
    # Warm up (forkserver starts its server on first use).
    p = ctx.Process(target=noop)
    p.start()
    p.join()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


if __name__ == "__main__":
    counts = [int(x) for x in sys.argv[1:4]] if len(sys.argv) >= 4 else [20, 20, 5]
    for method, n in zip(["fork", "forkserver", "spawn"], counts):
        if n > 0:
            print(method, measure(method, n), flush=True)
