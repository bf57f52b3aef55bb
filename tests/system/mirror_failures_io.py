#!/usr/bin/python3
"""Client I/O for tests/system/mirror_failures.sh, through libnbd (Debian's python3-libnbd).

  write URI LOG --start BLOCK --count N --seconds S [--stop FILE] [--tag T] [--pause S]
      Writes tagged 4 KiB blocks round-robin over [start, start+count) until S seconds passed (or
      FILE exists), pausing S seconds after each acknowledgement (default 0: as fast as it goes). LOG gets "A block seq" before each write and "K block seq latency" after its
      acknowledgement. A failed write is logged ("E block seq error"), retried after 0.2 s on a
      fresh connection (a host retrying its only path). Prints one JSON line: acked, errors,
      max_latency (one write), max_gap (between two acknowledgements), first_error.
  check URI LOG... [--tag T]
      Reads every block the logs name: each must hold the newest acknowledged write of that block,
      or a later attempted one, with tag T (never older, never another writer's, never other bytes).
      Exit 1 if a block is wrong, 2 if the reads failed (printed as {"error": ...}). Prints one JSON line; exit 1 if not.
  digest URI OFFSET LENGTH
      Prints the SHA-256 of LENGTH bytes at OFFSET.
  op URI read|write OFFSET [--timeout S] [--byte B]
      One 4 KiB read or write (+ flush) with a deadline. Prints "ok SECONDS" or "error SECONDS MSG";
      exit 0 or 1.
"""
import argparse
import json
import os
import struct
import sys
import time

import nbd

BS = 4096
MAGIC = 0x6D6972726F726631  # "mirrorf1"


def block_bytes(tag, block, seq):
    return struct.pack("<QQQQ", MAGIC, tag, block, seq) * (BS // 32)


def parse(buf):
    rec = buf[:32]
    if buf != rec * (BS // 32):
        return None
    magic, tag, block, seq = struct.unpack("<QQQQ", rec)
    if magic != MAGIC:
        return None
    return tag, block, seq


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def wait_cmd(h, cookie, deadline):
    while not h.aio_command_completed(cookie):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer before the deadline")
        h.poll(int(min(left, 0.1) * 1000) or 1)


def cmd_write(a):
    log = open(a.log, "a", buffering=1)
    end = time.monotonic() + a.seconds
    h = None
    seq = 0
    acked = errors = 0
    max_lat = 0.0
    last_ack = time.monotonic()
    max_gap = 0.0
    first_error = ""
    i = 0
    while time.monotonic() < end and not (a.stop and os.path.exists(a.stop)):
        block = a.start + i % a.count
        seq += 1
        log.write(f"A {block} {seq}\n")
        t0 = time.monotonic()
        try:
            if h is None:
                h = connect(a.uri)
            buf = nbd.Buffer.from_bytearray(bytearray(block_bytes(a.tag, block, seq)))
            cookie = h.aio_pwrite(buf, block * BS)
            wait_cmd(h, cookie, t0 + 60)
        except Exception as e:  # noqa: BLE001 - any failure is reported and retried
            errors += 1
            first_error = first_error or f"{time.strftime('%T')} {e}"
            log.write(f"E {block} {seq} {str(e)!r}\n")
            try:
                if h is not None:
                    h.shutdown()
            except Exception:  # noqa: BLE001
                pass
            h = None
            time.sleep(0.2)
            continue
        now = time.monotonic()
        lat = now - t0
        max_lat = max(max_lat, lat)
        max_gap = max(max_gap, now - last_ack)
        last_ack = now
        acked += 1
        log.write(f"K {block} {seq} {lat:.3f}\n")
        i += 1
        if a.pause:
            time.sleep(a.pause)
    try:
        if h is not None:
            h.flush()
            h.shutdown()
    except Exception:  # noqa: BLE001
        pass
    print(json.dumps({"acked": acked, "errors": errors, "max_latency": round(max_lat, 3),
                      "max_gap": round(max_gap, 3), "first_error": first_error}))


def cmd_check(a):
    acked, attempted = {}, {}
    for path in a.log:
        for line in open(path):
            f = line.split()
            if len(f) < 3:
                continue
            block, seq = int(f[1]), int(f[2])
            if f[0] == "A":
                attempted.setdefault(block, set()).add(seq)
            elif f[0] == "K":
                acked[block] = max(acked.get(block, 0), seq)
    bad = []
    try:
        h = connect(a.uri)
        reads = [(block, h.pread(BS, block * BS)) for block in sorted(attempted)]
        h.shutdown()
    except Exception as e:  # noqa: BLE001 - a refused read is reported as such, not as data
        print(json.dumps({"error": str(e)}))
        sys.exit(2)
    for block, buf in reads:
        got = parse(buf)
        want = acked.get(block, 0)
        if got is None:
            if want:
                bad.append(f"block {block}: not a tagged block (newest acknowledged seq {want})")
            continue
        gtag, gblock, gseq = got
        if gtag != a.tag or gblock != block or gseq not in attempted[block] or gseq < want:
            bad.append(f"block {block}: holds tag {gtag} block {gblock} seq {gseq}, newest acknowledged "
                       f"tag {a.tag} seq {want}")
    print(json.dumps({"blocks": len(attempted), "acknowledged_blocks": len(acked), "bad": bad[:10],
                      "bad_count": len(bad)}))
    sys.exit(1 if bad else 0)


def cmd_digest(a):
    import hashlib
    h = connect(a.uri)
    print(hashlib.sha256(h.pread(a.length, a.offset)).hexdigest())
    h.shutdown()


def cmd_op(a):
    t0 = time.monotonic()
    deadline = t0 + a.timeout
    try:
        h = connect(a.uri)
        if a.what == "write":
            buf = nbd.Buffer.from_bytearray(bytearray([a.byte]) * BS)
            wait_cmd(h, h.aio_pwrite(buf, a.offset), deadline)
            wait_cmd(h, h.aio_flush(), deadline)
        else:
            buf = nbd.Buffer(BS)
            wait_cmd(h, h.aio_pread(buf, a.offset), deadline)
        print(f"ok {time.monotonic() - t0:.2f}")
        try:
            h.shutdown()
        except Exception:  # noqa: BLE001
            pass
        return 0
    except Exception as e:  # noqa: BLE001
        print(f"error {time.monotonic() - t0:.2f} {e}")
        return 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("uri")
    w.add_argument("log")
    w.add_argument("--start", type=int, default=0)
    w.add_argument("--count", type=int, default=256)
    w.add_argument("--seconds", type=float, default=10)
    w.add_argument("--stop", default="")
    w.add_argument("--tag", type=int, default=1)
    w.add_argument("--pause", type=float, default=0)
    c = sub.add_parser("check")
    c.add_argument("uri")
    c.add_argument("log", nargs="+")
    c.add_argument("--tag", type=int, default=1)
    d = sub.add_parser("digest")
    d.add_argument("uri")
    d.add_argument("offset", type=int)
    d.add_argument("length", type=int)
    o = sub.add_parser("op")
    o.add_argument("uri")
    o.add_argument("what", choices=["read", "write"])
    o.add_argument("offset", type=int)
    o.add_argument("--timeout", type=float, default=30)
    o.add_argument("--byte", type=int, default=0x5A)
    a = p.parse_args()
    if a.cmd == "write":
        cmd_write(a)
    elif a.cmd == "check":
        cmd_check(a)
    elif a.cmd == "digest":
        cmd_digest(a)
    else:
        sys.exit(cmd_op(a))


if __name__ == "__main__":
    main()
