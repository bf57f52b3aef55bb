"""A multipath-aware iSCSI client for tests/system/multipath_failover.sh: one session through each
node's portal to the same mirrored LU, I/O on the active/optimized path (REPORT TARGET PORT
GROUPS), and on a path failure (connection lost, NOT READY 04/0A/0B/0C) the I/O is retried on the
other path, queued while no path serves (like dm-multipath's queue_if_no_path, up to 30 s). This
is what ESXi NMP, MSDSM and dm-multipath do.

It writes 4 KiB blocks in sequence (each tagged with its sequence number) for SECONDS seconds
while the shell kills a node, then reads every block back through the surviving path. It prints
one JSON line: writes acknowledged, the longest pause between two acknowledgements (and when),
the I/Os that failed on a path and were retried on the other (the path then becomes the active
one), the errors surfaced to the application (not
retried within 30 s), and the blocks that read back older than their last acknowledged write
(lost writes).
    multipath_failover.py HOST PORT_N1 PORT_N2 TARGET SECONDS
"""
import json
import struct
import sys
import time

from iscsi_initiator import CHECK_CONDITION, GOOD, IscsiError, Session

HOST, P1, P2, TARGET, SECONDS = sys.argv[1:6]
BS = 4096
BLOCKS = 1024  # the first 4 MiB
QUEUE_LIMIT = 30.0
PATH_DOWN = {(0x2, 0x04, 0x0A), (0x2, 0x04, 0x0B), (0x2, 0x04, 0x0C)}


class Resting(Exception):
    """The path failed less than 0.5 s ago: not tried again yet (not a new failure)."""


class Path:
    def __init__(self, name, port):
        self.name, self.port, self.session, self.failed_at = name, int(port), None, 0.0

    def get(self):
        if self.session is None:
            if time.monotonic() - self.failed_at < 0.5:
                raise Resting(self.name)
            self.session = Session(HOST, self.port, TARGET, "iqn.2026-11.io.duplex.test:mpio-host",
                                   isid=bytes([0x80, 0, 0, 0, 0, 7 if self.name == "n1" else 8]), timeout=15)
        return self.session

    def fail(self):
        if self.session is not None:
            try:
                self.session.sock.close()
            except OSError:
                pass
        self.session, self.failed_at = None, time.monotonic()


def optimized_first(paths):
    """Paths ordered by their ALUA state (RTPG through any working path): optimized first."""
    for p in paths:
        try:
            s = p.get()
            st, _, d = s.command_past_ua(bytes([0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]), data_in_len=4096)
            if st != GOOD:
                continue
            state = {}
            pos = 4
            end = 4 + struct.unpack(">I", d[:4])[0]
            while pos + 8 <= end:
                tpg = struct.unpack(">H", d[pos + 2:pos + 4])[0]
                state[tpg] = d[pos] & 0x0F
                pos += 8 + 4 * d[pos + 7]
            # Node rank = port group (docs/multipath.md): n1 is group 1, n2 group 2.
            return sorted(paths, key=lambda x: state.get(1 if x.name == "n1" else 2, 0xF))
        except (OSError, IscsiError):
            p.fail()
    return paths


def failed(paths, p, stats):
    """An I/O failed on path p: it is retried on the next one, which becomes the active path."""
    if stats is not None:
        stats["path_failures"] += 1
    paths.remove(p)
    paths.append(p)


def io(paths, cdb, data_out=b"", data_in_len=0, stats=None):
    """One command through the first path that serves it; retried over the paths for up to
    QUEUE_LIMIT s. Returns (status, sense, data) of the answer the application gets."""
    start = time.monotonic()
    while True:
        for p in list(paths):
            try:
                s = p.get()
                st, sense, data = s.command_past_ua(cdb, data_out=data_out, data_in_len=data_in_len)
            except Resting:
                continue
            except (OSError, IscsiError):
                p.fail()
                failed(paths, p, stats)
                continue
            key = (sense[2] & 0x0F, sense[12], sense[13]) if st == CHECK_CONDITION and len(sense) >= 14 else None
            if key in PATH_DOWN:
                failed(paths, p, stats)
                continue
            return st, sense, data
        if time.monotonic() - start > QUEUE_LIMIT:
            return None, b"", b""
        time.sleep(0.05)


def block(seq):
    return struct.pack(">QQ", 0xD0D0, seq) * (BS // 16)


def main():
    paths = optimized_first([Path("n1", P1), Path("n2", P2)])
    stats = {"first_path": paths[0].name, "acked": 0, "path_failures": 0, "surfaced_errors": 0,
             "max_pause": 0.0, "pause_at": 0.0, "lost": 0, "bad_blocks": []}
    last_acked = {}
    t0 = last = time.monotonic()
    seq = 0
    while time.monotonic() - t0 < float(SECONDS):
        seq += 1
        lba = (seq % BLOCKS) * (BS // 512)
        cdb = struct.pack(">BBIBHB", 0x2A, 0, lba, 0, BS // 512, 0)
        st, sense, _ = io(paths, cdb, data_out=block(seq), stats=stats)
        now = time.monotonic()
        if st == GOOD:
            stats["acked"] += 1
            last_acked[lba] = seq
            if now - last > stats["max_pause"]:
                stats["max_pause"], stats["pause_at"] = round(now - last, 3), round(last - t0, 3)
            last = now
        else:
            stats["surfaced_errors"] += 1
            stats.setdefault("first_error", f"status {st} sense {sense.hex()}")
    for lba, want in sorted(last_acked.items()):
        cdb = struct.pack(">BBIBHB", 0x28, 0, lba, 0, BS // 512, 0)
        st, _, data = io(paths, cdb, data_in_len=BS)
        got = struct.unpack(">QQ", data[:16])[1] if st == GOOD and len(data) >= 16 else None
        if got is None or got < want:
            stats["lost"] += 1
            if len(stats["bad_blocks"]) < 5:
                stats["bad_blocks"].append({"lba": lba, "acked": want, "read": got})
    stats["last_path"] = paths[0].name
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
