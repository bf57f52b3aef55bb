#!/usr/bin/python3
"""A fixed NBD write workload for instruction counts (bench/mirror-cost.sh): N writes of BS bytes
at QD in flight, through libnbd (Debian's python3-libnbd). Offsets are pseudo-random multiples of
BS inside the first SPAN bytes (seeded, so every run writes the same sequence), or sequential with
--seq. Prints one JSON line: writes, bytes, seconds.

    nbd_writer.py URI --writes N [--bs 4096] [--qd 32] [--span BYTES] [--seq] [--seed S]
"""
import argparse
import json
import random
import time

import nbd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("uri")
    ap.add_argument("--writes", type=int, required=True)
    ap.add_argument("--bs", type=int, default=4096)
    ap.add_argument("--qd", type=int, default=32)
    ap.add_argument("--span", type=int, default=1 << 30)
    ap.add_argument("--seq", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    h = nbd.NBD()
    h.connect_uri(a.uri)
    rng = random.Random(a.seed)
    slots = a.span // a.bs
    buf = nbd.Buffer.from_bytearray(bytearray(rng.randbytes(a.bs)))
    issued = done = 0

    def completed(err):
        nonlocal done
        if err.value != 0:
            raise SystemExit(f"write failed: {err.value}")
        done += 1
        return 1

    t0 = time.monotonic()
    while done < a.writes:
        while issued < a.writes and issued - done < a.qd:
            off = (issued % slots) * a.bs if a.seq else rng.randrange(slots) * a.bs
            h.aio_pwrite(buf, off, completion=completed)
            issued += 1
        h.poll(-1)
    secs = time.monotonic() - t0
    h.shutdown()
    print(json.dumps({"writes": a.writes, "bytes": a.writes * a.bs, "seconds": round(secs, 3)}))


if __name__ == "__main__":
    main()
