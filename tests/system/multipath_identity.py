"""The iSCSI side of tests/system/multipath_identity.sh: one session through each node's portal to
the same mirrored volume, kept open while the mirror link is cut and healed and the volume is
deleted, so that the unit attentions each session is owed are seen.

Prints "ok - ..." / "FAIL - ..." lines; the exit status is the number of failures (at most 100).
    multipath_identity.py HOST PORT_N1 PORT_N2 TARGET PROXY_CONTROL_PORT API TOKEN VOLUME
"""
import json
import socket
import struct
import sys
import time
import urllib.request

from checks import bad, check, finish, ok
from iscsi_initiator import CHECK_CONDITION, GOOD, Session

HOST, P1, P2, TARGET, CONTROL, API, TOKEN, VOLUME = sys.argv[1:9]
BS = 512


def sense_of(sense):
    """(key, asc, ascq) of fixed-format sense, or None."""
    if len(sense) < 14:
        return None
    return sense[2] & 0x0F, sense[12], sense[13]


UA_ALUA = (0x6, 0x2A, 0x06)
NOT_READY_UNAVAILABLE = (0x2, 0x04, 0x0C)
LUN_NOT_SUPPORTED = (0x5, 0x25, 0x00)

TUR = bytes(6)


def vpd(s, page):
    st, _, d = s.command_past_ua(bytes([0x12, 1, page, 0x10, 0, 0]), data_in_len=4096)
    assert st == GOOD, f"INQUIRY VPD 0x{page:02x}: status {st}"
    return d[4:4 + struct.unpack(">H", d[2:4])[0]]


def designators(page83):
    """{(association, type): value bytes}"""
    out, pos = {}, 0
    while pos + 4 <= len(page83):
        assoc, dtype, n = (page83[pos + 1] >> 4) & 0x3, page83[pos + 1] & 0xF, page83[pos + 3]
        out[(assoc, dtype)] = page83[pos + 4:pos + 4 + n]
        pos += 4 + n
    return out


def capacity(s):
    st, _, d = s.command_past_ua(bytes([0x9E, 0x10]) + bytes(8) + struct.pack(">I", 32) + bytes(2), data_in_len=32)
    assert st == GOOD
    return struct.unpack(">QI", d[:12])


def rtpg(s):
    """{group id: (state, preferred, [relative ports])} through session s (past unit attentions)."""
    st, sense, d = s.command_past_ua(bytes([0xA3, 0x0A, 0, 0, 0, 0]) + struct.pack(">I", 1024) + bytes(2),
                                     data_in_len=1024)
    assert st == GOOD, f"RTPG: status {st} sense {sense_of(sense)}"
    out, pos, end = {}, 4, 4 + struct.unpack(">I", d[:4])[0]
    while pos + 8 <= end:
        gid, count = struct.unpack(">H", d[pos + 2:pos + 4])[0], d[pos + 7]
        ports = [struct.unpack(">H", d[pos + 8 + 4 * i + 2:pos + 8 + 4 * i + 4])[0] for i in range(count)]
        out[gid] = (d[pos] & 0x0F, bool(d[pos] & 0x80), ports)
        pos += 8 + 4 * count
    return out


def proxy(cmd):
    with socket.create_connection((HOST, int(CONTROL)), timeout=5) as c:
        c.sendall((cmd + "\n").encode())
        return c.makefile("r").readline().strip()


def api(method, path, body=None):
    req = urllib.request.Request(API + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def poll(s, cdb, want, limit, data_in_len=0):
    """Sends cdb every 0.2 s until its (key, asc, ascq) is `want` (None: GOOD); returns (the answers
    seen, in order, without repeats; the last one; the longest a command took)."""
    seen, deadline, slowest = [], time.monotonic() + limit, 0.0
    while True:
        t = time.monotonic()
        st, sense, data = s.command(cdb, data_in_len=data_in_len)
        slowest = max(slowest, time.monotonic() - t)
        got = None if st == GOOD else sense_of(sense) if st == CHECK_CONDITION else ("status", st)
        if not seen or seen[-1] != got:
            seen.append(got)
        if got == want or time.monotonic() > deadline:
            return seen, got, slowest, data
        time.sleep(0.2)


def read10(lba, n=8):
    return bytes([0x28, 0]) + struct.pack(">I", lba) + bytes([0]) + struct.pack(">H", n) + bytes([0])


def write10(lba, n=8):
    return bytes([0x2A, 0]) + struct.pack(">I", lba) + bytes([0]) + struct.pack(">H", n) + bytes([0])


s1 = Session(HOST, int(P1), TARGET, "iqn.2026-11.io.test:host-a")
s2 = Session(HOST, int(P2), TARGET, "iqn.2026-11.io.test:host-a")
for s in (s1, s2):
    s.command_past_ua(TUR)

# --- one identity through both portals -----------------------------------------------------------
v80 = [vpd(s, 0x80) for s in (s1, s2)]
check(v80[0] == v80[1] and len(v80[0]) > 0, "unit serial (VPD 0x80) is the same through both nodes",
      f"{v80[0]!r} vs {v80[1]!r}")
d83 = [designators(vpd(s, 0x83)) for s in (s1, s2)]
naa = [d.get((0, 3)) for d in d83]
check(naa[0] is not None and naa[0] == naa[1] and naa[0][0] >> 4 == 6,
      f"NAA designator (VPD 0x83) is the same through both nodes: {naa[0].hex() if naa[0] else None}",
      f"{naa}")
caps = [capacity(s) for s in (s1, s2)]
check(caps[0] == caps[1], f"capacity is the same through both nodes: {caps[0][0] + 1} blocks of {caps[0][1]}",
      f"{caps}")
rel = [struct.unpack(">H", d[(1, 4)][2:4])[0] for d in d83]
tpg = [struct.unpack(">H", d[(1, 5)][2:4])[0] for d in d83]
check(rel[0] != rel[1] and tpg[0] != tpg[1] and sorted(tpg) == [1, 2],
      f"relative target port and target port group differ per node: n1 {rel[0]}/{tpg[0]}, n2 {rel[1]}/{tpg[1]}",
      f"rel {rel} tpg {tpg}")

# --- ALUA: the preferred site's node active/optimized, the other active/non-optimized ----------
AO, ANO, UNAV = 0x0, 0x1, 0x3
g = [rtpg(s) for s in (s1, s2)]
check(g[0] == g[1], "REPORT TARGET PORT GROUPS is the same through both nodes", f"{g}")
check(g[0].get(tpg[0]) == (AO, True, [rel[0]]) and g[0].get(tpg[1]) == (ANO, False, [rel[1]]),
      "RTPG: n1 (preferred site a) active/optimized and preferred, n2 active/non-optimized", f"{g[0]}")

# --- fence n2: the mirror link is cut, n1 removes n2 from the in-sync set -----------------------
# The set changes when a node needs it to: n1's next write removes n2 (compare-and-swap in etcd)
# before it is acknowledged; n2 adopts the new set from etcd (its reconciler's pass) or on its next
# I/O, whichever comes first.
t_cut = time.monotonic()
check(proxy("cut") == "ok", "mirror link cut")
payload = bytes((i * 7 + 3) & 0xFF for i in range(8 * BS))
st, sense, _ = s1.command_past_ua(write10(64), data_out=payload)
check(st == GOOD, f"a WRITE through n1 succeeds {time.monotonic() - t_cut:.1f} s after the cut (n2 removed)",
      f"status {st} sense {sense_of(sense)}")
seen2, last2, slow2, _ = poll(s2, TUR, NOT_READY_UNAVAILABLE, 25)
check(last2 == NOT_READY_UNAVAILABLE and UA_ALUA in seen2,
      f"n2 (out of the in-sync set) answers TEST UNIT READY with 02/04/0C after a 2A/06 unit attention, "
      f"{time.monotonic() - t_cut:.1f} s after the cut", f"answers seen {seen2}")
t = time.monotonic()
st, sense, _ = s2.command(read10(0), data_in_len=8 * BS)
check(st == CHECK_CONDITION and sense_of(sense) == NOT_READY_UNAVAILABLE and time.monotonic() - t < 2,
      f"a READ through n2 gets 02/04/0C at once ({time.monotonic() - t:.2f} s), it does not hang",
      f"status {st} sense {sense_of(sense)}")
st, sense, _ = s2.command(write10(0), data_out=b"\x5a" * 8 * BS)
check(st == CHECK_CONDITION and sense_of(sense) == NOT_READY_UNAVAILABLE, "a WRITE through n2 gets 02/04/0C",
      f"status {st} sense {sense_of(sense)}")
g2 = rtpg(s2)
check(g2.get(tpg[1], (None,))[0] == UNAV and g2.get(tpg[0], (None,))[0] == AO,
      "RTPG through n2: its own group unavailable, n1's active/optimized", f"{g2}")
seen1, last1, _, _ = poll(s1, TUR, None, 10)
check(UA_ALUA in seen1 and last1 is None, "n1's session hears 2A/06 once, then TEST UNIT READY is good",
      f"answers seen {seen1}")
g1 = rtpg(s1)
check(g1.get(tpg[0]) == (AO, True, [rel[0]]) and g1.get(tpg[1], (None,))[0] == UNAV,
      "RTPG through n1: n1 active/optimized, n2 unavailable", f"{g1}")
st, sense, _ = s1.command_past_ua(write10(72), data_out=payload)
check(st == GOOD, "another WRITE through n1 succeeds while n2 is fenced", f"status {st} sense {sense_of(sense)}")

# --- heal: n2 is resynced, back in the set, active/non-optimized again ---------------------------
t_heal = time.monotonic()
check(proxy("heal") == "ok", "mirror link healed")
seen2, last2, _, _ = poll(s2, TUR, None, 30)
check(last2 is None and UA_ALUA in seen2,
      f"n2 serves again {time.monotonic() - t_heal:.1f} s after the heal, after a 2A/06 unit attention",
      f"answers seen {seen2}")
g2 = rtpg(s2)
check(g2.get(tpg[0]) == (AO, True, [rel[0]]) and g2.get(tpg[1]) == (ANO, False, [rel[1]]),
      "RTPG through n2: n1 active/optimized, n2 active/non-optimized again", f"{g2}")
st, _, data = s2.command_past_ua(read10(64, 16), data_in_len=16 * BS)
check(st == GOOD and data == payload * 2, "n2 reads what n1 wrote while it was fenced", f"status {st}")
seen1, last1, _, _ = poll(s1, TUR, None, 5)
check(UA_ALUA in seen1 and last1 is None, "n1's session hears the return as 2A/06 too", f"answers seen {seen1}")

# --- the preferred node drained, then resumed: the optimized path moves and comes back ----------
# A drain (planned maintenance) takes n1 out of the set by its own compare-and-swap; n2 owns the
# volume. Both sessions hear 2A/06; n1's path is unavailable, n2's active/optimized. On resume n2
# copies what n1 missed, adds it back, and the placement makes n1 the owner again.
t_drain = time.monotonic()
api("POST", "/v1/nodes/n1/drain", {"reason": "multipath test"})
seen1, last1, _, _ = poll(s1, TUR, NOT_READY_UNAVAILABLE, 20)
check(last1 == NOT_READY_UNAVAILABLE and UA_ALUA in seen1,
      f"n1 drained: its session hears 2A/06, then 02/04/0C ({time.monotonic() - t_drain:.1f} s)",
      f"answers seen {seen1}")
seen2, last2, _, _ = poll(s2, TUR, None, 10)
check(UA_ALUA in seen2 and last2 is None, "n1 drained: n2's session hears 2A/06, then TEST UNIT READY is good",
      f"answers seen {seen2}")
g2 = rtpg(s2)
check(g2.get(tpg[1]) == (AO, True, [rel[1]]) and g2.get(tpg[0], (None,))[0] == UNAV,
      "RTPG through n2 while n1 is drained: n2 active/optimized and preferred, n1 unavailable", f"{g2}")
st, sense, _ = s2.command_past_ua(write10(80), data_out=payload)
check(st == GOOD, "a WRITE through n2 succeeds while n1 is drained", f"status {st} sense {sense_of(sense)}")
t_resume = time.monotonic()
api("POST", "/v1/nodes/n1/resume", {})
seen1, last1, _, _ = poll(s1, TUR, None, 30)
check(last1 is None and UA_ALUA in seen1,
      f"n1 resumed: its session hears 2A/06 and it serves again ({time.monotonic() - t_resume:.1f} s)",
      f"answers seen {seen1}")
deadline = time.monotonic() + 20
while True:
    g1 = rtpg(s1)
    if g1.get(tpg[0]) == (AO, True, [rel[0]]) or time.monotonic() > deadline:
        break
    time.sleep(0.2)
check(g1.get(tpg[0]) == (AO, True, [rel[0]]) and g1.get(tpg[1]) == (ANO, False, [rel[1]]),
      "RTPG through n1 after the resume: n1 (preferred site) active/optimized again, n2 active/non-optimized",
      f"{g1}")
st, _, data = s1.command_past_ua(read10(80, 8), data_in_len=8 * BS)
check(st == GOOD and data == payload, "n1 reads what n2 wrote while n1 was drained", f"status {st}")
seen2, _, _, _ = poll(s2, TUR, None, 5)
check(UA_ALUA in seen2, "n2's session hears the move back as 2A/06", f"answers seen {seen2}")

# --- the volume deleted: permanent device loss, not a hang or a device error --------------------
api("DELETE", f"/v1/volumes/{VOLUME}")
for name, s in (("n1", s1), ("n2", s2)):
    seen, last, slow, _ = poll(s, TUR, LUN_NOT_SUPPORTED, 20)
    check(last == LUN_NOT_SUPPORTED, f"after the delete, {name} answers 05/25/00 (LOGICAL UNIT NOT SUPPORTED)",
          f"answers seen {seen}")
    st, sense, data = s.command(bytes([0x12, 0, 0, 0, 36, 0]), data_in_len=36)
    check(st == GOOD and data[:1] == b"\x7f", f"... and INQUIRY through {name} says no LU is there (0x7f)",
          f"status {st} byte 0 {data[:1].hex()}")
for s in (s1, s2):
    s.logout()
finish()
