#!/usr/bin/python3
"""Consistency checker for a mirrored volume served by two nodes (issue 7, item 6).

  run    writers and readers through both nodes' NBD exports at once, for --seconds, while the
         harness injects faults (kill -9, link cuts, restarts); every operation is logged with
         its start and end time and whether it was acknowledged.
  check  after the harness healed everything: reads every block back through every node and
         checks the log against a linearizable register per block.

Each write fills one 4 KiB block with a tag (writer, sequence number, block) repeated over the
whole block, so a torn or misplaced write is caught too. A failed write is "indeterminate": it may
or may not have taken effect, at any time after it started. The checks, per block:

  - a read returns zeros only if no acknowledged write ended before the read began;
  - a read returns the tag of a write that started before the read ended, and that was not
    overwritten before the read began (by an acknowledged write that started after it ended);
  - at the end, every node returns the same block, and it is the last acknowledged write or one
    that may have come after it.

Uses libnbd's Python binding (python3-libnbd). Standard library otherwise.
"""
import argparse
import json
import os
import random
import struct
import sys
import threading
import time

import nbd

BLOCK = 4096
MAGIC = b"DXCK"
TAG = struct.Struct(">4sIQQ")  # magic, writer, seq, block: 24 bytes, repeated over the block


def encode(writer, seq, blk):
    t = TAG.pack(MAGIC, writer, seq, blk)
    reps = BLOCK // len(t) + 1
    return (t * reps)[:BLOCK]


def decode(data, blk):
    """(writer, seq) for a block written by us, None for zeros, or raise ValueError."""
    if data == bytes(BLOCK):
        return None
    magic, writer, seq, b = TAG.unpack_from(data, 0)
    if magic != MAGIC or b != blk or data != encode(writer, seq, blk):
        raise ValueError("block %d holds bytes no single write of ours produced" % blk)
    return (writer, seq)


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


class Worker(threading.Thread):
    """One client connection at a time; on any error it reconnects, trying the nodes in turn
    (as a multipath host would), and the failed operation is logged as not acknowledged."""

    def __init__(self, wid, uris, blocks, deadline, log, lock, writer, seed):
        super().__init__(daemon=True)
        self.node = wid % len(uris)
        self.wid, self.uris, self.blocks, self.deadline = wid, uris, blocks, deadline
        self.log, self.lock, self.writer = log, lock, writer
        self.rng = random.Random(seed)
        self.seq = 0
        self.counts = {"ok": 0, "failed": 0, "reconnects": 0}

    def emit(self, rec):
        with self.lock:
            self.log.write(json.dumps(rec) + "\n")

    def run(self):
        h = None
        while time.monotonic() < self.deadline:
            if h is None:
                try:
                    h = connect(self.uris[self.node])
                except nbd.Error:
                    self.node = (self.node + 1) % len(self.uris)
                    self.counts["reconnects"] += 1
                    time.sleep(0.1)
                    continue
            blk = self.rng.randrange(self.blocks)
            t0 = time.monotonic()
            rec = {"node": self.node, "blk": blk, "t0": t0}
            try:
                if self.writer:
                    self.seq += 1
                    rec.update(op="w", tag=[self.wid, self.seq])
                    h.pwrite(encode(self.wid, self.seq, blk), blk * BLOCK)
                else:
                    rec.update(op="r")
                    data = h.pread(BLOCK, blk * BLOCK)
                    try:
                        t = decode(data, blk)
                        rec["tag"] = list(t) if t else None
                    except ValueError as e:
                        rec["garbage"] = str(e)
                rec.update(t1=time.monotonic(), ok=True)
                self.counts["ok"] += 1
            except nbd.Error as e:
                rec.update(t1=time.monotonic(), ok=False, error=str(e))
                self.counts["failed"] += 1
                try:
                    h.shutdown()
                except nbd.Error:
                    pass
                h = None
                self.node = (self.node + 1) % len(self.uris)
            self.emit(rec)
        if h is not None:
            try:
                h.shutdown()
            except nbd.Error:
                pass


def cmd_run(a):
    deadline = time.monotonic() + a.seconds
    lock = threading.Lock()
    with open(a.log, "w") as log:
        # Maps the monotonic times of the records to wall-clock time (to line up with daemon logs).
        log.write(json.dumps({"op": "meta", "wall_minus_monotonic": time.time() - time.monotonic()}) + "\n")
        # What the blocks hold before this run (an earlier run's writes): as if written at time 0.
        h = connect(a.uri[0])
        for blk in range(a.blocks):
            t = decode(h.pread(BLOCK, blk * BLOCK), blk)
            if t:
                log.write(json.dumps({"op": "w", "blk": blk, "tag": list(t), "t0": 0.0, "t1": 0.0, "ok": True,
                                      "initial": True}) + "\n")
        h.shutdown()
        # Writer ids unique per run (from the seed), so tags never repeat across runs.
        base = (a.seed % 1000000) * 16
        ws = [Worker(base + i, a.uri, a.blocks, deadline, log, lock, i < a.writers, a.seed * 1000 + i)
              for i in range(a.writers + a.readers)]
        for w in ws:
            w.start()
        for w in ws:
            w.join()
    total = {k: sum(w.counts[k] for w in ws) for k in ("ok", "failed", "reconnects")}
    print(json.dumps({"run": total}))
    return 0


def analyse(records, final):
    """Violations (list of text) for the operation log and the final contents per node."""
    writes, reads = {}, []
    offset = next((r["wall_minus_monotonic"] for r in records if r["op"] == "meta"), 0.0)

    def when(r):
        wall = r["t0"] + offset
        return "%s.%03d via node%d" % (time.strftime("%H:%M:%S", time.gmtime(wall)), int(wall * 1000) % 1000,
                                       r.get("node", -1))

    for r in records:
        if r["op"] == "w":
            # An unacknowledged write may land at any moment after it started.
            end = r["t1"] if r["ok"] else float("inf")
            writes.setdefault(r["blk"], {})[tuple(r["tag"])] = (r["t0"], end, r["ok"])
        elif r["op"] == "r" and r["ok"]:
            reads.append(r)
    bad = []

    def overwritten_before(blk, w_end, moment):
        """An acknowledged write to blk that started after w_end and ended before moment."""
        for (t0, t1, ok) in writes.get(blk, {}).values():
            if ok and t0 > w_end and t1 < moment:
                return True
        return False

    def check_value(blk, tag, start, end, what):
        if tag is None:
            if any(ok and t1 < start for (_, t1, ok) in writes.get(blk, {}).values()):
                bad.append("%s of block %d returned zeros after an acknowledged write" % (what, blk))
            return
        w = writes.get(blk, {}).get(tuple(tag))
        if w is None:
            bad.append("%s of block %d returned tag %s that no write produced" % (what, blk, tag))
        elif w[0] > end:
            bad.append("%s of block %d returned tag %s from a write that started later" % (what, blk, tag))
        elif overwritten_before(blk, w[1], start):
            bad.append("%s of block %d returned tag %s, overwritten by an acknowledged write before" % (what, blk, tag))

    by_blk = {}
    for r in reads:
        if "garbage" in r:
            bad.append("read at %s: %s" % (when(r), r["garbage"]))
            continue
        check_value(r["blk"], r.get("tag"), r["t0"], r["t1"], "read at %s" % when(r))
        by_blk.setdefault(r["blk"], []).append(r)
    # No going back in time: a read that began after another ended never returns a value that was
    # certainly older (its write ended before the other's value was even written).
    for blk, rs in by_blk.items():
        ws = writes.get(blk, {})
        for r1 in rs:
            w1 = ws.get(tuple(r1["tag"])) if r1.get("tag") else None
            for r2 in rs:
                if r2["t0"] <= r1["t1"]:
                    continue
                if r2.get("tag") is None:
                    if w1 is not None:
                        bad.append("read of block %d at %.3f returned zeros after a read saw tag %s" %
                                   (blk, r2["t0"], r1["tag"]))
                    continue
                w2 = ws.get(tuple(r2["tag"]))
                if w1 is not None and w2 is not None and w2[1] < w1[0]:
                    bad.append("read of block %d at %.3f returned tag %s, older than tag %s read before" %
                               (blk, r2["t0"], r2["tag"], r1["tag"]))
    if final is not None:
        now = float("inf")
        nodes = list(final.keys())
        for blk in range(len(final[nodes[0]])):
            vals = [final[n][blk] for n in nodes]
            if any(v != vals[0] for v in vals):
                bad.append("final block %d differs between nodes: %s" % (blk, vals))
                continue
            if vals[0] == "garbage":
                bad.append("final block %d holds garbage" % blk)
                continue
            check_value(blk, vals[0], now, now, "final read")
    return bad


def cmd_check(a):
    with open(a.log) as f:
        records = [json.loads(line) for line in f if line.strip()]
    final = {}
    for i, uri in enumerate(a.uri):
        h = connect(uri)
        vals = []
        for blk in range(a.blocks):
            data = h.pread(BLOCK, blk * BLOCK)
            try:
                t = decode(data, blk)
                vals.append(list(t) if t else None)
            except ValueError:
                vals.append("garbage")
        h.shutdown()
        final["node%d" % i] = vals
    bad = analyse(records, final)
    acked = sum(1 for r in records if r["op"] == "w" and r["ok"])
    summary = {
        "writes_acknowledged": acked,
        "writes_failed": sum(1 for r in records if r["op"] == "w" and not r["ok"]),
        "reads_checked": sum(1 for r in records if r["op"] == "r" and r["ok"]),
        "blocks_checked_per_node": a.blocks,
        "violations": len(bad),
    }
    print(json.dumps(summary))
    for b in bad[:20]:
        print("VIOLATION:", b)
    return 1 if bad or acked == 0 else 0


def cmd_selftest(_a):
    """The analysis itself catches what it must (run without any server)."""
    W = lambda blk, tag, t0, t1, ok=True: {"op": "w", "blk": blk, "tag": tag, "t0": t0, "t1": t1, "ok": ok}
    R = lambda blk, tag, t0, t1: {"op": "r", "blk": blk, "tag": tag, "t0": t0, "t1": t1, "ok": True}
    good = [W(0, [0, 1], 0, 1), W(0, [1, 1], 2, 3), R(0, [0, 1], 1.5, 1.6), R(0, [1, 1], 2.5, 2.6),
            R(0, [0, 1], 2.5, 2.6), W(1, [0, 2], 0, 1, ok=False), R(1, [0, 2], 5, 6), R(1, None, 5, 6)]
    assert analyse(good, {"a": [[1, 1], [0, 2]], "b": [[1, 1], [0, 2]]}) == [], analyse(good, None)
    cases = {
        "stale read": [W(0, [0, 1], 0, 1), W(0, [1, 1], 2, 3), R(0, [0, 1], 4, 5)],
        "lost write": [W(0, [0, 1], 0, 1), R(0, None, 2, 3)],
        "future read": [W(0, [0, 1], 5, 6), R(0, [0, 1], 1, 2)],
        "phantom": [R(0, [9, 9], 1, 2)],
        "back in time": [W(0, [0, 1], 0, 1), W(0, [1, 1], 2, 10), R(0, [1, 1], 3, 4), R(0, [0, 1], 5, 6)],
    }
    for name, recs in cases.items():
        assert analyse(recs, None), name
    assert analyse([W(0, [0, 1], 0, 1)], {"a": [None], "b": [None]}), "final lost write"
    assert analyse([W(0, [0, 1], 0, 1)], {"a": [[0, 1]], "b": [None]}), "final nodes differ"
    assert decode(encode(3, 7, 5), 5) == (3, 7)
    try:
        decode(encode(3, 7, 5)[:100] + bytes(BLOCK - 100), 5)
        raise AssertionError("torn block accepted")
    except ValueError:
        pass
    print("selftest ok")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--uri", action="append", required=True)
    r.add_argument("--blocks", type=int, default=256)
    r.add_argument("--writers", type=int, default=4)
    r.add_argument("--readers", type=int, default=2)
    r.add_argument("--seconds", type=float, default=20)
    r.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(2), "big"))
    r.add_argument("--log", required=True)
    c = sub.add_parser("check")
    c.add_argument("--uri", action="append", required=True)
    c.add_argument("--blocks", type=int, default=256)
    c.add_argument("--log", required=True)
    sub.add_parser("selftest")
    a = p.parse_args()
    return {"run": cmd_run, "check": cmd_check, "selftest": cmd_selftest}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
