"""Operations per second of Python's multiprocessing Manager().list() / .dict().

Usage: python3 benches/python_manager.py N
Prints one line per operation: "<name> <seconds per op>", then the same
operations from two processes at once ("<name>_2p <seconds>": two
processes each doing the N operations on one Manager container at once;
the time until both finished over N, as benches/manager.rs measures its
"shmproc 2p" column).
"""
import multiprocessing as mp
import sys
import time


def per_op(n, f):
    t = time.perf_counter()
    f()
    return (time.perf_counter() - t) / n


def main(n):
    with mp.Manager() as m:
        lst = m.list()
        print("list_append", per_op(n, lambda: [lst.append(i) for i in range(n)]), flush=True)
        print("list_get", per_op(n, lambda: [lst[i] for i in range(n)]), flush=True)
        d = m.dict()
        print("dict_insert_u64", per_op(n, lambda: [d.__setitem__(i, i) for i in range(n)]), flush=True)
        print("dict_get_u64", per_op(n, lambda: [d[i] for i in range(n)]), flush=True)
        keys = ["key-%d" % i for i in range(n)]
        ds = m.dict()
        print("dict_insert_string", per_op(n, lambda: [ds.__setitem__(k, 1) for k in keys]), flush=True)
        print("dict_get_string", per_op(n, lambda: [ds[k] for k in keys]), flush=True)


def run_op(op, c, n, keys):
    if op == "list_append":
        for i in range(n):
            c.append(i)
    elif op == "list_get":
        for i in range(n):
            c[i]
    elif op == "dict_insert_u64":
        for i in range(n):
            c[i] = i
    elif op == "dict_get_u64":
        for i in range(n):
            c[i]
    elif op == "dict_insert_string":
        for k in keys:
            c[k] = 1
    elif op == "dict_get_string":
        for k in keys:
            c[k]


def worker(op, c, n, barrier):
    keys = ["key-%d" % i for i in range(n)]
    barrier.wait()
    run_op(op, c, n, keys)


def two_procs(n):
    """Each operation from two processes at once on one container."""
    keys = ["key-%d" % i for i in range(n)]
    with mp.Manager() as m:
        for op in ("list_append", "list_get", "dict_insert_u64", "dict_get_u64", "dict_insert_string", "dict_get_string"):
            if op.startswith("list"):
                c = m.list(range(n) if op == "list_get" else [])
            elif op == "dict_get_u64":
                c = m.dict({i: i for i in range(n)})
            elif op == "dict_get_string":
                c = m.dict({k: i for i, k in enumerate(keys)})
            else:
                c = m.dict()
            barrier = mp.Barrier(3)
            ps = [mp.Process(target=worker, args=(op, c, n, barrier)) for _ in range(2)]
            for p in ps:
                p.start()
            barrier.wait()
            t = time.perf_counter()
            for p in ps:
                p.join()
            print(op + "_2p", (time.perf_counter() - t) / n, flush=True)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    main(n)
    two_procs(n)
