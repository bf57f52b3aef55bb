"""The iSCSI side of tests/system/multipath_pr.sh: SCSI-3 persistent reservations on a mirrored
volume used by two hosts, host A through node n1's portal and host B through n2's (a failover
cluster whose nodes reach the disk through different storage nodes). Every check is made through
the node the change did NOT go through, right after the change completes: one reservation state
for the LU, enforced through every port at once.

    multipath_pr.py HOST PORT_N1 PORT_N2 TARGET PHASE [PAUSE_SOCKET]
PHASE "live": the failover-cluster sequence and every service action across the nodes.
PHASE "after-n1-loss" / "after-n2-loss" / "both": the state "live" left is still there through
the surviving node (the shell script killed the other one), or through both once it is back.
PHASE "executing" (tests/system/multipath_pr_inflight.sh): n1's pool disk can be paused through
PAUSE_SOCKET (nbdkit's pause filter), which holds a write of host A (through n2) executing in
the volume while host B (through n1) preempts and aborts A, then resets the LU.
Prints "ok - ..." / "FAIL - ..." lines; the exit status is the number of failures.
"""
import socket
import struct
import sys
import time

from checks import bad, check, finish, ok
from iscsi_initiator import CHECK_CONDITION, GOOD, RESERVATION_CONFLICT, Session, pr_in, pr_out

HOST, P1, P2, TARGET, PHASE = sys.argv[1:6]
PORT = {"n1": int(P1), "n2": int(P2)}
BS = 512
KEY_A, KEY_B, KEY_C = 0xA0A0, 0xB0B0, 0xC0C0
WE, EA, WE_RO = 1, 3, 5  # WRITE EXCLUSIVE, EXCLUSIVE ACCESS, WRITE EXCLUSIVE - REGISTRANTS ONLY
REGISTER, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT_ABORT, REGISTER_IGNORE, REGISTER_MOVE = range(8)


def host(name, node, isid_last):
    return Session(HOST, PORT[node], TARGET, f"iqn.2026-11.io.duplex.test:{name}",
                   isid=bytes([0x80, 0, 0, 0, 0, isid_last]))


def status(s, action, key=0, sa_key=0, prtype=0):
    return pr_out(s, action, key, sa_key, prtype)[0]


def keys(s):
    st, sense, data = pr_in(s, 0x00)
    assert st == GOOD, f"READ KEYS: status 0x{st:02x} sense {sense.hex()}"
    gen, length = struct.unpack(">II", data[:8])
    return gen, sorted(struct.unpack(">Q", data[8 + i:16 + i])[0] for i in range(0, length, 8))


def reservation(s):
    st, sense, data = pr_in(s, 0x01)
    assert st == GOOD, f"READ RESERVATION: status 0x{st:02x} sense {sense.hex()}"
    if struct.unpack(">I", data[4:8])[0] == 0:
        return None
    return struct.unpack(">Q", data[8:16])[0], data[21] & 0x0F


def write(s, lba, fill):
    return s.command(struct.pack(">BBIBHB", 0x2A, 0, lba, 0, 1, 0), data_out=bytes([fill]) * BS)


def read(s, lba):
    return s.command(struct.pack(">BBIBHB", 0x28, 0, lba, 0, 1, 0), data_in_len=BS)


def ua_of(s):
    """The unit attention a TEST UNIT READY reports now, as (asc, ascq), or None."""
    st, sense, _ = s.command(bytes(6))
    if st == CHECK_CONDITION and len(sense) >= 14 and sense[2] & 0x0F == 0x6:
        return sense[12], sense[13]
    return None


def drain_ua(s):
    for _ in range(8):
        if ua_of(s) is None:
            return


def live():
    a = host("host-a", "n1", 1)
    b = host("host-b", "n2", 2)
    c = host("host-c", "n2", 3)  # never registers
    for s in (a, b, c):
        drain_ua(s)

    # Registration through one node is seen through the other at once.
    check(status(a, REGISTER, 0, KEY_A) == GOOD, "A registers through n1")
    gen, ks = keys(b)
    check(ks == [KEY_A], "B reads A's key through n2 right after", f"keys {ks}")
    check(status(b, REGISTER, 0, KEY_B) == GOOD, "B registers through n2")
    gen2, ks = keys(a)
    check(ks == [KEY_A, KEY_B] and gen2 > gen, "A reads both keys through n1, PRgeneration moved",
          f"keys {ks} generation {gen} -> {gen2}")
    check(status(b, REGISTER, 0, KEY_B) == RESERVATION_CONFLICT,
          "B's second REGISTER with a wrong old key (0) conflicts: the owner sees B's registration")

    # A reserves (the cluster's active node); B's and C's writes through n2 are refused at once.
    check(status(a, RESERVE, KEY_A, 0, WE) == GOOD, "A reserves WRITE EXCLUSIVE through n1")
    check(reservation(b) == (KEY_A, WE), "B sees A's reservation through n2", str(reservation(b)))
    st, _, _ = write(b, 10, 0xBB)
    check(st == RESERVATION_CONFLICT, "B's write through n2 gets RESERVATION CONFLICT", f"status 0x{st:02x}")
    st, _, _ = write(c, 10, 0xCC)
    check(st == RESERVATION_CONFLICT, "C's write through n2 gets RESERVATION CONFLICT", f"status 0x{st:02x}")
    st, _, _ = read(b, 10)
    check(st == GOOD, "B may still read through n2 (WRITE EXCLUSIVE)", f"status 0x{st:02x}")
    st, _, _ = write(a, 10, 0xAA)
    check(st == GOOD, "A writes through n1", f"status 0x{st:02x}")
    check(status(b, RESERVE, KEY_B, 0, WE) == RESERVATION_CONFLICT, "B's RESERVE through n2 conflicts")

    # Host A fails; B (the surviving cluster node) preempts its reservation through n2.
    check(status(b, PREEMPT, KEY_B, KEY_A, WE) == GOOD, "B preempts A through n2 (A failed)")
    ua = ua_of(a)  # first: any command but INQUIRY, REPORT LUNS and REQUEST SENSE consumes it
    check(ua == (0x2A, 0x05), "A hears REGISTRATIONS PREEMPTED (2A/05) through n1", str(ua))
    check(reservation(a) == (KEY_B, WE), "the reservation is B's, read through n1", str(reservation(a)))
    st, _, _ = write(a, 11, 0xAA)
    check(st == RESERVATION_CONFLICT, "A's write through n1 now conflicts (its key is gone)", f"status 0x{st:02x}")
    _, ks = keys(a)
    check(ks == [KEY_B], "only B's key is left, read through n1", str(ks))
    st, _, _ = write(b, 11, 0xBB)
    check(st == GOOD, "B writes through n2", f"status 0x{st:02x}")

    # A comes back: registers again; B moves its reservation to A's nexus on n1 (REGISTER AND MOVE).
    check(status(a, REGISTER, 0, KEY_A) == GOOD, "A registers again through n1")
    tid = b"iqn.2026-11.io.duplex.test:host-a,i,0x800000000001\0"
    tid += b"\0" * ((4 - len(tid) % 4) % 4)
    tid = bytes([0x45, 0, 0, len(tid)]) + tid
    params = struct.pack(">QQBBHI", KEY_B, KEY_A, 0, 0, 1, len(tid)) + tid
    cdb = struct.pack(">BBBHIB", 0x5F, REGISTER_MOVE, WE, 0, len(params), 0)
    st, sense, _ = b.command_past_ua(cdb, data_out=params)
    check(st == GOOD, "B moves the reservation to A's nexus on n1 (REGISTER AND MOVE through n2)",
          f"status 0x{st:02x} sense {sense.hex()}")
    check(reservation(b) == (KEY_A, WE), "n2 shows A holding it", str(reservation(b)))
    st, _, _ = write(a, 12, 0xAA)
    check(st == GOOD, "A writes through n1 again", f"status 0x{st:02x}")
    st, _, _ = write(b, 12, 0xBB)
    check(st == RESERVATION_CONFLICT, "B's write through n2 conflicts again", f"status 0x{st:02x}")

    # RELEASE through n1 and a registrants-only type: B's registration lets it write through n2.
    check(status(a, RELEASE, KEY_A, 0, WE) == GOOD, "A releases through n1")
    check(reservation(b) is None, "n2 shows no reservation", str(reservation(b)))
    check(status(a, RESERVE, KEY_A, 0, WE_RO) == GOOD, "A reserves WRITE EXCLUSIVE - REGISTRANTS ONLY")
    st, _, _ = write(b, 13, 0xBB)
    check(st == GOOD, "registered B writes through n2", f"status 0x{st:02x}")
    st, _, _ = write(c, 13, 0xCC)
    check(st == RESERVATION_CONFLICT, "unregistered C's write through n2 conflicts", f"status 0x{st:02x}")

    # PREEMPT AND ABORT through n2 while A has a write in flight through n1 (sent, waiting for its
    # Data-Out): A's registration goes and its command is aborted on n1 (TAS=0: never answered,
    # the late Data-Out dropped); A hears 2A/05, then 2F/00 (commands cleared by another initiator).
    itt, ttt = a.start_write_awaiting_r2t(14)
    check(status(b, PREEMPT_ABORT, KEY_B, KEY_A, EA) == GOOD, "B preempts and aborts A through n2")
    a.send_data_out(itt, ttt, bytes([0xA5]) * BS)
    late = a.next_answer(1.0)
    check(late is None, "A's write in flight through n1 is aborted: never answered, its Data-Out dropped",
          f"got opcode/itt {late}")
    ua = ua_of(a)
    check(ua == (0x2A, 0x05), "A hears 2A/05 through n1 after PREEMPT AND ABORT", str(ua))
    ua = ua_of(a)
    check(ua == (0x2F, 0x00), "then COMMANDS CLEARED BY ANOTHER INITIATOR (2F/00) for its aborted write", str(ua))
    check(reservation(a) == (KEY_B, EA), "n1 shows B's EXCLUSIVE ACCESS reservation", str(reservation(a)))
    st, _, _ = read(a, 13)
    check(st == RESERVATION_CONFLICT, "A may not even read through n1 (EXCLUSIVE ACCESS)", f"status 0x{st:02x}")
    st, _, data = b.command_past_ua(struct.pack(">BBIBHB", 0x28, 0, 14, 0, 1, 0), data_in_len=BS)
    check(st == GOOD and data != bytes([0xA5]) * BS, "the aborted write never reached the volume (read through n2)",
          f"status 0x{st:02x}")

    # LOGICAL UNIT RESET through n1 raises 29/03 on n2's nexuses too; reservations stay.
    drain_ua(b)
    resp = a.task_management(5)
    check(resp == 0, "LOGICAL UNIT RESET through n1 completes", f"response {resp}")
    ua = ua_of(b)
    check(ua == (0x29, 0x03), "B hears the LUN reset (29/03) through n2", str(ua))
    check(reservation(b) == (KEY_B, EA), "the reservation survives the LUN reset", str(reservation(b)))

    # And a reset aborts the LU's commands on the other node too. B's write in flight through n2
    # ends unanswered when A resets the LU through n1 (the owner: n2 aborts it when the reset is
    # installed there), and A's through n1 when B resets it through n2 (forwarded to n1, which
    # aborts it before it answers). Each hears 29/03 and nothing more.
    for who, node, other, other_node, lba, fill in ((b, "n2", a, "n1", 15, 0xB5), (a, "n1", b, "n2", 16, 0xA6)):
        drain_ua(a)
        drain_ua(b)
        itt, ttt = who.start_write_awaiting_r2t(lba)
        resp = other.task_management(5)
        check(resp == 0, f"LOGICAL UNIT RESET through {other_node} completes", f"response {resp}")
        who.send_data_out(itt, ttt, bytes([fill]) * BS)
        late = who.next_answer(1.0)
        check(late is None, f"a write in flight through {node} is aborted by the reset through {other_node}: "
              "never answered", f"got opcode/itt {late}")
        ua = ua_of(who)
        check(ua == (0x29, 0x03), f"its host hears 29/03 through {node}", str(ua))
        ua = ua_of(who)
        check(ua is None, f"and nothing more through {node} (a reset's aborts are told by 29/03 alone)", str(ua))
        st, _, data = b.command_past_ua(struct.pack(">BBIBHB", 0x28, 0, lba, 0, 1, 0), data_in_len=BS)
        check(st == GOOD and data != bytes([fill]) * BS, "the aborted write never reached the volume",
              f"status 0x{st:02x}")
    drain_ua(a)
    drain_ua(b)

    # CLEAR through n1 by a registrant, then the state the loss tests check.
    check(status(a, REGISTER, 0, KEY_A) == GOOD, "A registers again through n1")
    check(status(a, CLEAR, KEY_A) == GOOD, "A clears through n1")
    ua = ua_of(b)
    check(ua == (0x2A, 0x03), "B hears RESERVATIONS PREEMPTED (2A/03) through n2 after CLEAR", str(ua))
    check(keys(b)[1] == [] and reservation(b) is None, "n2 shows no keys and no reservation after CLEAR")
    check(status(a, REGISTER, 0, KEY_A) == GOOD and status(b, REGISTER, 0, KEY_B) == GOOD,
          "A and B register again (through n1 and n2)")
    check(status(b, RESERVE, KEY_B, 0, WE) == GOOD, "B reserves WRITE EXCLUSIVE through n2")
    for s in (a, b, c):
        s.logout()


def after_loss():
    """Non-APTPL state lives in the nodes' memory only: it must outlive the loss of either node."""
    nodes = {"after-n1-loss": ["n2"], "after-n2-loss": ["n1"], "both": ["n1", "n2"]}[PHASE]
    for node in nodes:
        s = host("host-d", node, 4)
        drain_ua(s)
        _, ks = keys(s)
        check(ks == [KEY_A, KEY_B], f"{PHASE}: both keys read through {node}", str(ks))
        r = reservation(s)
        check(r == (KEY_B, WE), f"{PHASE}: B's reservation read through {node}", str(r))
        st, _, _ = write(s, 20, 0xDD)
        check(st == RESERVATION_CONFLICT, f"{PHASE}: an unregistered host's write through {node} conflicts",
              f"status 0x{st:02x}")
        s.logout()


def disk(command):
    """Pauses ('p': once the requests already received have completed) or resumes ('r') n1's
    pool disk through nbdkit's pause filter."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(10)
        c.connect(sys.argv[6])
        c.sendall(command.encode())
        reply = c.recv(1)
        assert reply == command.upper().encode(), f"pause filter answered {reply!r} to {command!r}"


def executing():
    """A write of host A through n2 is forwarded to the owner n1, where it waits for n1's paused
    disk: it is executing when B, through n1, preempts and aborts A (or resets the LU). The peer
    n2 aborts it when the change is installed there and answers the owner only once it ended, so
    B's command is answered only after A's write is over, and A's write never is."""
    a = host("host-a", "n2", 1)
    b = host("host-b", "n1", 2)
    for s in (a, b):
        drain_ua(s)
    check(status(a, REGISTER, 0, KEY_A) == GOOD and status(b, REGISTER, 0, KEY_B) == GOOD,
          "A registers through n2, B through n1")
    check(status(a, RESERVE, KEY_A, 0, WE) == GOOD, "A reserves WRITE EXCLUSIVE through n2")
    for lba in (30, 31):
        st, _, _ = write(a, lba, 0x11)
        check(st == GOOD, f"A writes block {lba} through n2 (its clusters exist before the pause)",
              f"status 0x{st:02x}")

    # The reset first: A keeps its reservation through it, so its next write is allowed too.
    for step, lba, fill in (("LOGICAL UNIT RESET", 31, 0xA8), ("PREEMPT AND ABORT", 30, 0xA7)):
        drain_ua(a)
        drain_ua(b)
        disk("p")
        itt = a.send_command(struct.pack(">BBIBHB", 0x2A, 0, lba, 0, 1, 0), bytes([fill]) * BS)
        time.sleep(0.3)  # forwarded to n1, where it waits for the disk
        if step == "PREEMPT AND ABORT":
            params = struct.pack(">QQIBBH", KEY_B, KEY_A, 0, 0, 0, 0)
            mine = b.send_command(struct.pack(">BBBHIB", 0x5F, PREEMPT_ABORT, WE, 0, len(params), 0), params)
            want = 0x21
        else:
            mine = b.send_task_management(5)
            want = 0x22
        early = b.next_answer(1.5)
        check(early is None, f"{step} through n1 is not answered while A's write through n2 still executes",
              f"answered: {early}")
        t0 = time.monotonic()
        disk("r")
        got = early or b.next_answer(15)
        check(got is not None and got[0] == want and got[1] == mine and got[2] == GOOD,
              f"{step} answered once A's write is over ({time.monotonic() - t0:.2f} s after the disk resumed)",
              f"got {got}")
        late = a.next_answer(1.0)
        check(late is None, f"A's write through n2, executing during the {step}, is never answered",
              f"got opcode/itt/status {late}")
        expect = [(0x2A, 0x05), (0x2F, 0x00)] if step == "PREEMPT AND ABORT" else [(0x29, 0x03)]
        heard = [ua_of(a) for _ in expect]
        check(heard == expect, f"A hears {' then '.join(f'{x:02X}/{y:02X}' for x, y in expect)} through n2",
              str(heard))
        st, _, data = b.command_past_ua(struct.pack(">BBIBHB", 0x28, 0, lba, 0, 1, 0), data_in_len=BS)
        check(st == GOOD and data == bytes([fill]) * BS,
              "A's aborted write had been executing: it completed before the answer (read through n1)",
              f"status 0x{st:02x}")
    for s in (a, b):
        s.logout()


def main():
    if PHASE == "live":
        live()
    elif PHASE == "executing":
        executing()
    else:
        after_loss()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - any exception is a failed check, with its reason
        bad(f"{PHASE}: {e!r}")
    finish()
