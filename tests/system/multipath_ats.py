"""The iSCSI side of tests/system/multipath_ats.sh: two hosts run a VMware-ATS-style lock loop on
the same block of a mirrored volume, host 1 through node n1's portal and host 2 through n2's.

Each round a host reads the lock record (a count and the winner's tag), and COMPARE AND WRITEs
the next count with its own tag over it. ATS is only a lock if each count is won exactly once:
two hosts that both get GOOD for the same count both believe they hold the lock. Checks:
  - every count 1..final was won by exactly one host (none twice, none skipped);
  - the final record, read through either node, holds the count of all wins;
  - both hosts won and both lost rounds (the race was real), a loss is MISCOMPARE (0E/1D/00)
    with the offset of the first differing byte, and no other status came back.
Prints "ok - ..." / "FAIL - ..." lines; the exit status is the number of failures.
    multipath_ats.py HOST PORT_N1 PORT_N2 TARGET SECONDS
"""
import struct
import sys
import threading
import time

from checks import bad, finish, ok
from iscsi_initiator import CHECK_CONDITION, GOOD, Session

HOST, P1, P2, TARGET, SECONDS = sys.argv[1:6]
BS = 512
LBA = 2048
MISCOMPARE = 0x0E


def record(count, tag):
    return struct.pack(">Q", count) + bytes([tag]) + b"\0" * (BS - 9)


def read16(s, lba):
    st, sense, data = s.command_past_ua(struct.pack(">BBQIBB", 0x88, 0, lba, 1, 0, 0), data_in_len=BS)
    if st != GOOD:
        raise RuntimeError(f"READ(16): status 0x{st:02x} sense {sense.hex()}")
    return data


def caw(s, lba, expected, new):
    cdb = struct.pack(">BBQ3sBBB", 0x89, 0, lba, b"\0\0\0", 1, 0, 0)
    return s.command_past_ua(cdb, data_out=expected + new)


class Host(threading.Thread):
    def __init__(self, tag, port, deadline):
        super().__init__()
        self.tag, self.port, self.deadline = tag, int(port), deadline
        self.wins, self.losses, self.errors, self.bad_offsets = [], 0, [], []

    def run(self):
        s = Session(HOST, self.port, TARGET, f"iqn.2026-11.io.duplex.test:ats-host{self.tag}",
                    isid=bytes([0x80, 0, 0, 0, 0, self.tag]))
        try:
            while time.monotonic() < self.deadline:
                cur = read16(s, LBA)
                count = struct.unpack(">Q", cur[:8])[0]
                st, sense, _ = caw(s, LBA, cur, record(count + 1, self.tag))
                if st == GOOD:
                    self.wins.append(count + 1)
                elif st == CHECK_CONDITION and len(sense) >= 14 and sense[2] & 0x0F == MISCOMPARE \
                        and (sense[12], sense[13]) == (0x1D, 0x00):
                    self.losses += 1
                    info = struct.unpack(">I", sense[3:7])[0] if sense[0] & 0x80 else None
                    if info is None or info >= 9:  # only the count and the tag can differ
                        self.bad_offsets.append(info)
                else:
                    self.errors.append(f"status 0x{st:02x} sense {sense.hex()}")
                    if len(self.errors) > 10:
                        break
        except Exception as e:  # noqa: BLE001 - reported as a failure of this host
            self.errors.append(repr(e))
        finally:
            s.logout()


def main():
    s1 = Session(HOST, int(P1), TARGET, "iqn.2026-11.io.duplex.test:ats-setup")
    st, sense, _ = s1.command_past_ua(struct.pack(">BBIBHB", 0x2A, 0, LBA, 0, 1, 0), data_out=record(0, 0))
    if st != GOOD:
        bad(f"writing the lock record: status 0x{st:02x} sense {sense.hex()}")
        return
    s1.logout()
    deadline = time.monotonic() + float(SECONDS)
    hosts = [Host(1, P1, deadline), Host(2, P2, deadline)]
    for h in hosts:
        h.start()
    for h in hosts:
        h.join()
    for h, node in zip(hosts, ("n1", "n2")):
        if h.errors:
            bad(f"host {h.tag} through {node}: {len(h.errors)} error(s), first: {h.errors[0]}")
        else:
            ok(f"host {h.tag} through {node}: {len(h.wins)} rounds won, {h.losses} lost (MISCOMPARE), no other status")
        if h.bad_offsets:
            bad(f"host {h.tag}: MISCOMPARE with a wrong information field: {h.bad_offsets[:5]}")
    won = sorted(hosts[0].wins + hosts[1].wins)
    twice = sorted({c for c in won if won.count(c) > 1})
    if twice:
        bad(f"{len(twice)} count(s) won by both hosts (two lock holders at once), e.g. {twice[:10]}")
    else:
        ok(f"each of {len(won)} counts was won by exactly one host")
    if won and won != list(range(1, len(won) + 1)):
        bad(f"the counts won are not 1..{len(won)}: a win skipped a count")
    finals = {}
    for node, port in (("n1", P1), ("n2", P2)):
        s = Session(HOST, int(port), TARGET, f"iqn.2026-11.io.duplex.test:ats-check-{node}")
        finals[node] = read16(s, LBA)
        s.logout()
    counts = {n: struct.unpack(">Q", d[:8])[0] for n, d in finals.items()}
    if finals["n1"] == finals["n2"] and counts["n1"] == len(won):
        ok(f"the record reads the same through n1 and n2: count {counts['n1']} = every win, none lost")
    else:
        bad(f"final record: n1 count {counts['n1']}, n2 count {counts['n2']}, wins {len(won)}, "
            f"equal bytes: {finals['n1'] == finals['n2']}")
    if all(h.wins for h in hosts) and all(h.losses for h in hosts):
        ok("both hosts won and lost rounds: they raced for the lock")
    else:
        bad(f"no real race: wins {[len(h.wins) for h in hosts]}, losses {[h.losses for h in hosts]}")


if __name__ == "__main__":
    main()
    finish()
