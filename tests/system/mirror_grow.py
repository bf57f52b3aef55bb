"""The iSCSI side of tests/system/mirror_grow.sh: one session through each node's portal to the
same mirrored volume, open before the grow and kept open through it, so that each one must hear
CAPACITY DATA HAS CHANGED (2A/09) and then read the new capacity; a write past the old end
through n2 reads back through n1.

Prints "ok - ..." / "FAIL - ..." lines; the exit status is the number of failures (at most 100).
    mirror_grow.py HOST PORT_N1 PORT_N2 TARGET OLD_BYTES NEW_BYTES -- GROW COMMAND...
The grow command (duplexctl volume grow, waiting until it is applied) runs between the two halves.
"""
import struct
import subprocess
import sys
import time

from checks import check, finish
from iscsi_initiator import CHECK_CONDITION, GOOD, Session

HOST, P1, P2, TARGET = sys.argv[1:5]
OLD, NEW = int(sys.argv[5]), int(sys.argv[6])
GROW = sys.argv[sys.argv.index("--") + 1:]
BS = 512
UA_CAPACITY = (0x6, 0x2A, 0x09)
RC16 = bytes([0x9E, 0x10]) + bytes(8) + struct.pack(">I", 32) + bytes(2)


def sense_of(sense):
    return (sense[2] & 0x0F, sense[12], sense[13]) if len(sense) >= 14 else None


def capacity_after_ua(s, want, limit):
    """READ CAPACITY(16) every 0.2 s until it reports `want` bytes: (answers seen, bytes)."""
    seen, deadline, got = [], time.monotonic() + limit, None
    while time.monotonic() < deadline:
        st, sense, d = s.command(RC16, data_in_len=32)
        answer = sense_of(sense) if st == CHECK_CONDITION else ("status", st) if st != GOOD else None
        if answer is None:
            last_lba, block = struct.unpack(">QI", d[:12])
            got = (last_lba + 1) * block
            answer = ("capacity", got)
        if not seen or seen[-1] != answer:
            seen.append(answer)
        if got == want:
            break
        time.sleep(0.2)
    return seen, got


def write10(lba, n):
    return bytes([0x2A, 0]) + struct.pack(">I", lba) + bytes([0]) + struct.pack(">H", n) + bytes([0])


def read10(lba, n):
    return bytes([0x28, 0]) + struct.pack(">I", lba) + bytes([0]) + struct.pack(">H", n) + bytes([0])


sessions = {"n1": Session(HOST, int(P1), TARGET, "iqn.2026-11.io.test:grow-host"),
            "n2": Session(HOST, int(P2), TARGET, "iqn.2026-11.io.test:grow-host")}
for name, s in sessions.items():
    s.command_past_ua(bytes(6))
    seen, got = capacity_after_ua(s, OLD, 5)
    check(got == OLD, f"before the grow, READ CAPACITY(16) through {name}: {OLD} bytes", f"answers {seen}")

t = time.monotonic()
grow = subprocess.run(GROW, capture_output=True, text=True, timeout=120, check=False)
check(grow.returncode == 0, f"{' '.join(GROW[-4:])}: exit 0 after {time.monotonic() - t:.1f} s "
      f"({grow.stdout.strip()})", f"exit {grow.returncode}: {grow.stdout} {grow.stderr}")

for name, s in sessions.items():
    seen, got = capacity_after_ua(s, NEW, 20)
    check(got == NEW and seen[0] == UA_CAPACITY,
          f"the session through {name} hears 2A/09 (CAPACITY DATA HAS CHANGED), then READ CAPACITY(16) "
          f"says {NEW} bytes", f"answers seen {seen}")

# Past the old end: through n2 (forwarded to the owner), read back through n1.
payload = bytes((i * 13 + 5) & 0xFF for i in range(16 * BS))
lba = OLD // BS + 64
st, sense, _ = sessions["n2"].command_past_ua(write10(lba, 16), data_out=payload)
check(st == GOOD, f"an iSCSI WRITE past the old end (LBA {lba}) through n2", f"status {st} sense {sense_of(sense)}")
st, sense, data = sessions["n1"].command_past_ua(read10(lba, 16), data_in_len=16 * BS)
check(st == GOOD and data == payload, "... reads back through n1", f"status {st} sense {sense_of(sense)}")
st, sense, _ = sessions["n1"].command_past_ua(read10(NEW // BS - 1, 1), data_in_len=BS)
check(st == GOOD, "the new last block reads through n1", f"status {st} sense {sense_of(sense)}")
st, sense, _ = sessions["n1"].command_past_ua(read10(NEW // BS, 1), data_in_len=BS)
check(st == CHECK_CONDITION and sense_of(sense) == (0x5, 0x21, 0x00), "one past it is LBA OUT OF RANGE",
      f"status {st} sense {sense_of(sense)}")
for s in sessions.values():
    s.logout()
finish()
