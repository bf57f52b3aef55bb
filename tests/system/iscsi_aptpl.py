#!/usr/bin/python3
"""Persistent reservations through duplexd's iSCSI portal survive a restart with APTPL, and only
with APTPL (SPC-4 5.13.5): the state file <state_dir>/pr/<volume-uuid>.pr appears, is restored at
start, enforced (a write from another initiator gets RESERVATION CONFLICT), removed when APTPL is
cleared; a corrupt file stops the start with an error naming it.

Run with /usr/bin/python3. DUPLEXD=path/to/duplexd.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from duplexd_fixture import Checker, Duplexd, free_port  # noqa: E402
from iscsi_initiator import (GOOD, RESERVATION_CONFLICT, Session, pr_out, read_keys,  # noqa: E402
                             read_reservation, write10)

HOST = "127.0.0.16"
IQN = "iqn.2026-11.io.duplex:disk"
INIT_A = "iqn.2026-11.io.duplex.test:host-a"
INIT_B = "iqn.2026-11.io.duplex.test:host-b"
REGISTER, RESERVE, RELEASE = 0x00, 0x01, 0x02
WRITE_EXCLUSIVE = 1
KEY_A, KEY_B = 0xA1A1, 0xB2B2

C = Checker("iscsi_aptpl")
work = tempfile.mkdtemp(prefix="duplex-aptpl-", dir="/var/tmp")
iscsi_port = free_port(HOST)
state = os.path.join(work, "state")
d = Duplexd(workdir=work, host=HOST, head_config=f'state_dir = "{state}"', extra_config=f"""
[[volume]]
name = "disk"
size = "64MiB"
[iscsi]
listen = ["{HOST}:{iscsi_port}"]
""")


def session(initiator, isid=b"\x80\x00\x00\x00\x00\x01"):
    return Session(HOST, iscsi_port, IQN, initiator, isid)


try:
    d.start(wait_ready=True)
    C.check(f"iscsi={HOST}:{iscsi_port}" in d.log_text(), "event=ready names the iSCSI portal")
    info = json.loads(subprocess.check_output(["nbdinfo", "--json", d.uri("disk")]))
    uuid = re.search(r"\(([0-9a-f-]{36})\)", info["exports"][0]["description"]).group(1)
    pr_file = os.path.join(state, "pr", uuid + ".pr")

    # Without APTPL nothing is written.
    a = session(INIT_A)
    st, sense, _ = pr_out(a, REGISTER, sa_key=KEY_A)
    C.check(st == GOOD, f"REGISTER without APTPL: status 0x{st:02x} sense {sense.hex()}")
    C.check(not os.path.exists(pr_file), "no state file without APTPL")
    # REGISTER AND IGNORE EXISTING KEY would also do; re-register with the same key and APTPL=1.
    st, sense, _ = pr_out(a, REGISTER, key=KEY_A, sa_key=KEY_A, aptpl=True)
    C.check(st == GOOD, f"REGISTER with APTPL: status 0x{st:02x} sense {sense.hex()}")
    st, sense, _ = pr_out(a, RESERVE, key=KEY_A, prtype=WRITE_EXCLUSIVE)
    C.check(st == GOOD, f"RESERVE write exclusive: status 0x{st:02x} sense {sense.hex()}")
    C.check(os.path.exists(pr_file), f"APTPL: state file {pr_file} written")
    C.check(not os.path.exists(pr_file + ".tmp"), "no temporary file left behind")
    b = session(INIT_B, b"\x80\x00\x00\x00\x00\x02")
    st, _, _ = pr_out(b, REGISTER, sa_key=KEY_B, aptpl=True)
    C.check(st == GOOD, "second initiator registers")
    st, _, _ = write10(b, 0, b"\x42" * 4096)
    C.check(st == RESERVATION_CONFLICT, f"write from a non-holder: RESERVATION CONFLICT (got 0x{st:02x})")
    gen_before, keys_before = read_keys(a)
    a.logout()
    b.logout()
    C.check(d.stop() == 0, "SIGTERM: exit 0")

    # Restart: the registrations and the reservation come back from the file.
    d.start(wait_ready=True)
    C.check("event=pr.restored" in d.log_text(), "event=pr.restored logged")
    a = session(INIT_A)
    b = session(INIT_B, b"\x80\x00\x00\x00\x00\x02")
    gen, keys = read_keys(a)
    C.check(sorted(keys) == sorted([KEY_A, KEY_B]), f"keys after restart: {[hex(k) for k in keys]}")
    C.check(gen == gen_before, f"PR generation kept ({gen} == {gen_before})")
    C.check(read_reservation(a) == (KEY_A, WRITE_EXCLUSIVE), f"reservation after restart: {read_reservation(a)}")
    st, _, _ = write10(b, 0, b"\x42" * 4096)
    C.check(st == RESERVATION_CONFLICT, f"restored reservation enforced: RESERVATION CONFLICT (got 0x{st:02x})")
    st, _, _ = write10(a, 0, b"\x41" * 4096)
    C.check(st == GOOD, f"the holder writes (got 0x{st:02x})")

    # Clearing APTPL (a REGISTER with APTPL=0 sets it for the whole state) removes the file.
    st, _, _ = pr_out(a, RELEASE, key=KEY_A, prtype=WRITE_EXCLUSIVE)
    C.check(st == GOOD, "RELEASE")
    st, _, _ = pr_out(a, REGISTER, key=KEY_A, sa_key=KEY_A, aptpl=False)
    C.check(st == GOOD, "REGISTER with APTPL=0")
    C.check(not os.path.exists(pr_file), "APTPL cleared: state file removed")
    a.logout()
    b.logout()
    C.check(d.stop() == 0, "SIGTERM: exit 0")
    d.start(wait_ready=True)
    a = session(INIT_A)
    _, keys = read_keys(a)
    C.check(keys == [], f"without APTPL the registrations are gone after a restart: {[hex(k) for k in keys]}")
    # Leave a reservation with APTPL for the corruption test.
    pr_out(a, REGISTER, sa_key=KEY_A, aptpl=True)
    a.logout()
    C.check(d.stop() == 0, "SIGTERM: exit 0")
    C.check(os.path.exists(pr_file), "state file written again")

    # A corrupt state file stops the start, naming the file.
    with open(pr_file, "r+b") as f:
        f.seek(6)
        f.write(b"\xff")
    rc = d.start(expect_fail=True)
    last = d.tail(1).strip()
    C.check(rc == 1 and pr_file in last and "corrupt" in last, f"corrupt state file: exit {rc}: {last}")
    os.unlink(pr_file)
    d.start(wait_ready=True)
    C.check(d.stop() == 0, "starts again once the file is removed")
except Exception as e:  # noqa: BLE001 - report and fail, the daemon is stopped below
    C.check(False, f"{type(e).__name__}: {e}\n{d.tail()}")
finally:
    if d.proc:
        d.stop()
    shutil.rmtree(work, ignore_errors=True)
C.done()
