"""One look at a mirrored volume's LU through one node's iSCSI portal, for the failure tests: how a
TEST UNIT READY is answered (past unit attentions) and how long it took, and the ALUA states of
every target port group in REPORT TARGET PORT GROUPS.

Prints one JSON line: {"tur": "good" | [key, asc, ascq] | "error: ...", "seconds": S,
"groups": {"1": state, ...}} (states as numbers: 0 active/optimized, 1 active/non-optimized,
3 unavailable).
    alua_probe.py HOST PORT TARGET
"""
import json
import struct
import sys
import time

from iscsi_initiator import CHECK_CONDITION, GOOD, Session

HOST, PORT, TARGET = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {"tur": None, "seconds": None, "groups": {}}
try:
    s = Session(HOST, PORT, TARGET, "iqn.2026-11.io.duplex.test:alua-probe", timeout=60)
    t0 = time.monotonic()
    st, sense, _ = s.command_past_ua(bytes(6))
    out["seconds"] = round(time.monotonic() - t0, 3)
    if st == GOOD:
        out["tur"] = "good"
    elif st == CHECK_CONDITION and len(sense) >= 14:
        out["tur"] = [sense[2] & 0x0F, sense[12], sense[13]]
    else:
        out["tur"] = f"status {st}"
    st, _, d = s.command_past_ua(bytes([0xA3, 0x0A, 0, 0, 0, 0]) + struct.pack(">I", 1024) + bytes(2),
                                 data_in_len=1024)
    if st == GOOD:
        pos, end = 4, 4 + struct.unpack(">I", d[:4])[0]
        while pos + 8 <= end:
            gid, count = struct.unpack(">H", d[pos + 2:pos + 4])[0], d[pos + 7]
            out["groups"][str(gid)] = d[pos] & 0x0F
            pos += 8 + 4 * count
    s.logout()
except Exception as e:  # noqa: BLE001 - the test reports whatever went wrong
    out["tur"] = out["tur"] or f"error: {e}"
print(json.dumps(out))
