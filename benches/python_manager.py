"""Operations per second of Python's multiprocessing Manager().list() / .dict().

Usage: python3 benches/python_manager.py N
Prints one line per operation: "<name> <seconds per op>".
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


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
