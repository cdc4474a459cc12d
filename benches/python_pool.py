"""Python's multiprocessing.Pool(2) on the pool bench's workloads.

Usage: python3 benches/python_pool.py N_MAP N_APPLY
Prints:
  map_tasks_per_s <tasks per second of pool.map(square, range(N_MAP))>
  apply_rtt_us <median microseconds of pool.apply_async(square, (7,)).get()>
"""
import multiprocessing as mp
import statistics
import sys
import time


def square(x):
    return x * x


def main():
    n_map, n_apply = int(sys.argv[1]), int(sys.argv[2])
    with mp.Pool(2) as pool:
        pool.map(square, range(1000))  # warm up
        t = time.perf_counter()
        out = pool.map(square, range(n_map))
        d = time.perf_counter() - t
        assert out[-1] == (n_map - 1) ** 2
        print("map_tasks_per_s", n_map / d)
        times = []
        for _ in range(n_apply):
            t = time.perf_counter()
            assert pool.apply_async(square, (7,)).get() == 49
            times.append(time.perf_counter() - t)
        print("apply_rtt_us", statistics.median(times) * 1e6)


if __name__ == "__main__":
    main()
