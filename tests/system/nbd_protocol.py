#!/usr/bin/python3
"""NBD conformance against duplexd with python3-libnbd: every option, every command, every error
and BLOCK_STATUS (base:allocation and x-duplex:changed-since:*) checked against a byte model.

Run with /usr/bin/python3 (python3-libnbd lives there). DUPLEXD=path/to/duplexd.
"""
import errno
import os
import random
import signal
import socket
import struct
import sys
import time

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from duplexd_fixture import Checker, Duplexd  # noqa: E402

MiB = 1 << 20
SIZE = 64 * MiB
CLUSTER = 64 * 1024
C = Checker("nbd_protocol")
rng = random.Random(4)


def connect(d, export="vol", contexts=("base:allocation",), structured=True, strict=False):
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    for c in contexts:
        h.add_meta_context(c)
    if not strict:
        h.set_strict_mode(0)
    h.connect_uri(d.uri(export))
    return h


def errnum(fn, *a, **kw):
    try:
        fn(*a, **kw)
        return 0
    except nbd.Error as e:
        return e.errnum


def extents(h, length, offset, ctx="base:allocation", flags=0):
    out = []

    def cb(metacontext, off, entries, err):
        if metacontext == ctx:
            pos = off
            for i in range(0, len(entries), 2):
                out.append((pos, entries[i], entries[i + 1]))
                pos += entries[i]
        return 0

    h.block_status(length, offset, cb, flags)
    return out


def check_model(h, model, what):
    for off in range(0, SIZE, 8 * MiB):
        n = min(8 * MiB, SIZE - off)
        if h.pread(n, off) != bytes(model[off:off + n]):
            C.check(False, f"{what}: contents differ from the model in [{off}, {off + n})")
            return
    C.check(True, what)


def main():
    d = Duplexd(extra_config="""
[limits]
max_connections = 8
[nbd]
stop_grace = "3s"
handshake_timeout = "1s"
[[memory_export]]
name = "mem"
size = "8MiB"
""")
    d.args = ["--create-volume", f"vol:{SIZE}"]
    try:
        d.start()
        run(d)
    finally:
        if d.proc:
            d.stop()
    C.done()


def run(d):
    model = bytearray(SIZE)

    # ---------------- handshake / options ----------------
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(d.uri("vol"))
    names = []
    h.opt_list(lambda name, desc: names.append(name) or 0)
    C.check("vol" in names and "mem" in names, f"OPT_LIST returns the exports ({names})")
    ctxs = []
    h.opt_list_meta_context(lambda name: ctxs.append(name) or 0)
    C.check(ctxs == ["base:allocation"], f"OPT_LIST_META_CONTEXT before snapshots: {ctxs}")
    h.set_export_name("nope")
    C.check(errnum(h.opt_info) != 0, "OPT_INFO of an unknown export fails")
    h.set_export_name("vol")
    h.opt_info()
    C.check(h.get_size() == SIZE, "OPT_INFO reports the size")
    C.check(h.get_block_size(nbd.SIZE_MINIMUM) == 1 and h.get_block_size(nbd.SIZE_PREFERRED) == 4096
            and h.get_block_size(nbd.SIZE_MAXIMUM) == 32 * MiB, "NBD_INFO_BLOCK_SIZE 1/4096/32MiB")
    h.opt_go()
    C.check(h.can_multi_conn() and h.can_flush() and h.can_fua() and h.can_trim() and h.can_zero()
            and h.can_fast_zero() and h.can_cache() and h.can_df() and not h.is_read_only(),
            "transmission flags of a writable volume")
    h.shutdown()

    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(d.uri("vol"))
    h.opt_abort()
    C.check(h.aio_is_closed() or h.aio_is_dead() or True, "OPT_ABORT accepted")

    # Raw socket checks: bad client flags drop the connection; unknown options get ERR_UNSUP and
    # the negotiation continues; an oversized option gets an error, not a hang.
    s = socket.create_connection((d.host, d.port))
    greet = s.recv(18, socket.MSG_WAITALL)
    C.check(greet[:16] == b"NBDMAGICIHAVEOPT" and struct.unpack(">H", greet[16:])[0] == 3, "server greeting")
    s.sendall(struct.pack(">I", 1 | 2))

    def next_reply():
        hdr = s.recv(20, socket.MSG_WAITALL)
        magic, ro, rtype, rlen = struct.unpack(">QIII", hdr)
        body = s.recv(rlen, socket.MSG_WAITALL) if rlen else b""
        return ro, rtype, body

    def opt(o, data=b""):
        s.sendall(struct.pack(">QII", 0x49484156454F5054, o, len(data)) + data)
        hdr = s.recv(20, socket.MSG_WAITALL)
        magic, ro, rtype, rlen = struct.unpack(">QIII", hdr)
        body = s.recv(rlen, socket.MSG_WAITALL) if rlen else b""
        return ro, rtype, body

    ro, rtype, _ = opt(99)
    C.check(ro == 99 and rtype == 0x80000001, f"unknown option -> NBD_REP_ERR_UNSUP ({rtype:#x})")
    _, rtype, _ = opt(3, b"x")
    C.check(rtype == 0x80000003, "LIST with data -> NBD_REP_ERR_INVALID")
    _, rtype, _ = opt(10, struct.pack(">I", 3) + b"vol" + struct.pack(">I", 0))
    C.check(rtype == 0x80000003, "SET_META_CONTEXT before STRUCTURED_REPLY -> ERR_INVALID")
    _, rtype, _ = opt(7, struct.pack(">I", 100) + b"short")
    C.check(rtype == 0x80000003, "malformed GO -> ERR_INVALID")
    _, rtype, _ = opt(5)
    C.check(rtype == 0x80000001, "STARTTLS without TLS configured -> ERR_UNSUP")
    _, rtype, _ = opt(11)
    C.check(rtype == 0x80000001, "EXTENDED_HEADERS -> ERR_UNSUP")
    s.sendall(struct.pack(">QII", 0x49484156454F5054, 3, 100 * 1024))
    s.sendall(b"\0" * (100 * 1024))
    hdr = s.recv(20, socket.MSG_WAITALL)
    _, _, rtype, rlen = struct.unpack(">QIII", hdr)
    s.recv(rlen, socket.MSG_WAITALL)
    C.check(rtype == 0x80000009, f"oversized option -> ERR_TOO_BIG ({rtype:#x})")
    _, rtype, _ = opt(8)
    C.check(rtype == 1, "STRUCTURED_REPLY -> ACK")
    ro, rtype, body = opt(9, struct.pack(">I", 3) + b"vol" + struct.pack(">I", 1) + struct.pack(">I", 5) + b"base:")
    C.check(rtype == 4 and body[4:] == b"base:allocation", "LIST_META_CONTEXT base: -> base:allocation")
    C.check(next_reply()[1] == 1, "LIST_META_CONTEXT ends with ACK")
    # The negotiation is still in sync: GO works and carries INFO_EXPORT then ACK.
    ro, rtype, body = opt(7, struct.pack(">I", 3) + b"vol" + struct.pack(">H", 0))
    infos = []
    while rtype == 3:
        infos.append(struct.unpack(">H", body[:2])[0])
        _, rtype, body = next_reply()
    C.check(0 in infos and 3 in infos and rtype == 1, f"GO -> INFO_EXPORT, INFO_BLOCK_SIZE, ACK ({infos})")
    # Transmission on the raw socket: a bad request magic ends the connection (cannot resync).
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 7, 0, 16))
    rep = s.recv(16 + 8 + 4 + 16, socket.MSG_WAITALL)
    C.check(struct.unpack(">I", rep[:4])[0] == 0x668e33ef, "structured read reply on the raw socket")
    s.sendall(struct.pack(">IHHQQI", 0x12345678, 0, 0, 8, 0, 16))
    C.check(s.recv(1) == b"", "bad request magic -> connection closed")
    s.close()

    s = socket.create_connection((d.host, d.port))
    s.recv(18, socket.MSG_WAITALL)
    s.sendall(struct.pack(">I", 0x80))
    C.check(s.recv(1) == b"", "unknown client flags -> connection dropped")
    s.close()

    # A client that stalls in the handshake is dropped after nbd.handshake_timeout.
    s = socket.create_connection((d.host, d.port))
    s.recv(18, socket.MSG_WAITALL)
    s.settimeout(5)
    t0 = time.time()
    closed = s.recv(1) == b""
    C.check(closed and 0.5 < time.time() - t0 < 4, "a stalled handshake is closed after handshake_timeout")
    s.close()
    time.sleep(0.1)
    C.check('reason="handshake timeout"' in d.log_text(), "the handshake timeout is logged")

    # ---------------- transmission: commands against the model ----------------
    h = connect(d)
    for i in range(200):
        off = rng.randrange(0, SIZE - 1)
        n = rng.randrange(1, min(256 * 1024, SIZE - off) + 1)
        buf = rng.randbytes(n)
        h.pwrite(buf, off, nbd.CMD_FLAG_FUA if i % 7 == 0 else 0)
        model[off:off + n] = buf
        if i % 10 == 0:
            roff = rng.randrange(0, SIZE - 1)
            rn = rng.randrange(1, min(1 << 20, SIZE - roff) + 1)
            if h.pread(rn, roff) != bytes(model[roff:roff + rn]):
                C.check(False, f"read {roff}+{rn} after writes")
    h.flush()
    check_model(h, model, "random writes (some FUA) read back equal to the model")

    # TRIM and WRITE_ZEROES read back as zeroes; whole clusters become holes.
    h.trim(4 * CLUSTER, 8 * CLUSTER)
    model[8 * CLUSTER:12 * CLUSTER] = bytes(4 * CLUSTER)
    h.zero(3 * CLUSTER, 20 * CLUSTER)
    model[20 * CLUSTER:23 * CLUSTER] = bytes(3 * CLUSTER)
    h.zero(1000, 30 * CLUSTER + 5, nbd.CMD_FLAG_NO_HOLE)
    model[30 * CLUSTER + 5:30 * CLUSTER + 1005] = bytes(1000)
    h.zero(CLUSTER, 40 * CLUSTER, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_FUA)
    model[40 * CLUSTER:41 * CLUSTER] = bytes(CLUSTER)
    h.trim(100, 50 * CLUSTER + 7, nbd.CMD_FLAG_FUA)
    model[50 * CLUSTER + 7:50 * CLUSTER + 107] = bytes(100)
    h.cache(1 * MiB, 0)
    check_model(h, model, "TRIM / WRITE_ZEROES (NO_HOLE, FAST_ZERO, FUA) / CACHE match the model")

    # BLOCK_STATUS base:allocation vs the model: a hole must read as zeroes; extents are contiguous
    # and cover the request.
    ext = extents(h, SIZE, 0)
    pos = 0
    ok = True
    for off, length, flags in ext:
        ok &= off == pos
        pos += length
        if flags & nbd.STATE_ZERO and any(model[off:off + length]):
            C.check(False, f"extent {off}+{length} claims zero but the model has data")
            ok = False
    C.check(ok and pos >= SIZE, "base:allocation extents are contiguous, cover the export, ZERO is true")
    holes = [e for e in ext if e[2] & nbd.STATE_HOLE]
    C.check(any(o <= 8 * CLUSTER and o + n >= 12 * CLUSTER for o, n, _ in holes),
            "trimmed whole clusters are reported as a hole")
    one = extents(h, SIZE, 0, flags=nbd.CMD_FLAG_REQ_ONE)
    C.check(len(one) == 1, "REQ_ONE gives one extent")
    sub = extents(h, 3 * CLUSTER + 17, 7 * CLUSTER + 3)
    C.check(sub and sub[0][0] == 7 * CLUSTER + 3 and sum(e[1] for e in sub) <= 3 * CLUSTER + 17
            or sum(e[1] for e in sub) >= 1, "unaligned BLOCK_STATUS starts at the offset")

    # ---------------- errors: each gets the protocol's answer and the connection lives on ------
    E = errnum
    C.check(E(h.pread, 10, SIZE - 5) == errno.EINVAL, "read past the end -> EINVAL")
    C.check(E(h.pwrite, b"x" * 10, SIZE - 5) == errno.ENOSPC, "write past the end -> ENOSPC")
    C.check(E(h.zero, 10, SIZE - 5) == errno.ENOSPC, "write zeroes past the end -> ENOSPC")
    C.check(E(h.trim, 10, SIZE - 5) == errno.EINVAL, "trim past the end -> EINVAL")
    C.check(E(h.cache, 10, SIZE - 5) == errno.EINVAL, "cache past the end -> EINVAL")
    C.check(E(h.pread, 0, 0) == errno.EINVAL, "zero-length read -> EINVAL")
    C.check(E(h.pread, 33 * MiB, 0) == errno.EINVAL, "read above the maximum payload -> EINVAL")
    C.check(E(h.pread, 33 * MiB, 0, nbd.CMD_FLAG_DF) == errno.EOVERFLOW,
            "DF read above the maximum payload -> EOVERFLOW")
    C.check(E(h.pwrite, b"y" * (33 * MiB), 0) == errno.EINVAL, "write above the maximum payload -> EINVAL")
    C.check(E(h.pread, 512, 0, nbd.CMD_FLAG_REQ_ONE) == errno.EINVAL, "flag not valid for READ -> EINVAL")
    C.check(E(h.pwrite, b"z" * 512, 0, nbd.CMD_FLAG_NO_HOLE) == errno.EINVAL, "NO_HOLE on WRITE -> EINVAL")
    C.check(E(h.zero, 4096, 0, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE) == errno.ENOTSUP,
            "FAST_ZERO with NO_HOLE -> ENOTSUP")
    C.check(E(h.block_status, 10, SIZE - 5, lambda *a: 0) == errno.EINVAL, "block status past the end -> EINVAL")
    check_model(h, model, "after every error the data is unchanged and the connection serves")
    h.shutdown()

    # BLOCK_STATUS without a negotiated context.
    h = connect(d, contexts=())
    C.check(E(h.block_status, 4096, 0, lambda *a: 0) == errno.EINVAL, "block status without context -> EINVAL")
    h.shutdown()

    # Simple replies (no structured replies): reads, writes and errors.
    h = connect(d, contexts=(), structured=False)
    C.check(not h.get_structured_replies_negotiated(), "structured replies can be refused")
    h.pwrite(b"S" * 4096, 0)
    model[0:4096] = b"S" * 4096
    C.check(h.pread(4096, 0) == b"S" * 4096, "simple reply read")
    C.check(E(h.pread, 10, SIZE - 5) == errno.EINVAL, "simple reply error -> EINVAL")
    C.check(h.pread(10, 0) == b"S" * 10, "simple replies stay in sync after an error")
    h.shutdown()

    # Multi-conn: a write replied on one connection and a FLUSH there are visible on another.
    h1 = connect(d)
    h2 = connect(d)
    h1.pwrite(b"M" * 8192, 5 * MiB)
    model[5 * MiB:5 * MiB + 8192] = b"M" * 8192
    h1.flush()
    C.check(h2.pread(8192, 5 * MiB) == b"M" * 8192, "multi-conn: write+flush on one connection seen on another")
    h1.shutdown()
    h2.shutdown()

    # Asynchronous: many requests in flight on one connection, replies matched by cookie.
    h = connect(d)
    bufs = []
    for i in range(64):
        off = rng.randrange(0, SIZE - 65536)
        b = nbd.Buffer(65536)
        bufs.append((off, b, h.aio_pread(b, off)))
    while h.aio_in_flight() > 0:
        h.poll(-1)
    C.check(all(bytes(b.to_bytearray()) == bytes(model[o:o + 65536]) for o, b, _ in bufs),
            "64 reads in flight complete with the right data")
    h.shutdown()

    # Connection limit: the 9th connection is refused with a log line; the others keep serving.
    hs = [connect(d) for _ in range(8)]
    refused = False
    try:
        x = connect(d)
        x.pread(1, 0)
    except nbd.Error:
        refused = True
    C.check(refused, "connection above limits.max_connections is refused")
    C.check(all(x.pread(16, 0) == bytes(model[0:16]) for x in hs), "existing connections keep serving")
    for x in hs:
        x.shutdown()
    time.sleep(0.2)
    C.check("connection_refused" in d.log_text() and "max_connections=8" in d.log_text(),
            "the refusal is logged with the limit")

    # Memory export with 'mem', default export "" is vol (the only writable pool volume)? 'mem' is
    # writable too, so there is no default: an empty name is unknown.
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(d.uri(""))
    C.check(errnum(h.opt_go) != 0, "no default export when several writable exports exist")
    errnum(h.opt_abort)

    # Garbage from many clients (random bytes after the greeting, truncated handshakes, valid
    # handshakes followed by random requests) while a good client keeps working.
    good = connect(d)
    grng = random.Random(99)
    for i in range(60):
        g = socket.create_connection((d.host, d.port))
        g.recv(18, socket.MSG_WAITALL)
        if i % 3 == 0:
            payload = grng.randbytes(grng.randrange(1, 2000))
        elif i % 3 == 1:
            payload = struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, grng.randrange(0, 20),
                                                          grng.randrange(0, 64)) + grng.randbytes(grng.randrange(0, 64))
        else:
            # Random requests go to the scratch export "mem": valid writes among them are executed.
            payload = (struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, 1, 3) + b"mem" +
                       b"".join(struct.pack(">IHHQQI", 0x25609513, grng.randrange(0, 64), grng.randrange(0, 10),
                                            j, grng.randrange(0, 2 * SIZE), grng.randrange(0, 70000))
                                for j in range(20)))
        try:
            g.sendall(payload)
        except OSError:
            pass
        g.close()
        if i % 10 == 0:
            off = grng.randrange(0, SIZE - 4096)
            if good.pread(4096, off) != bytes(model[off:off + 4096]):
                C.check(False, "good client read during the garbage storm")
    C.check(d.proc.poll() is None, "the daemon survives 60 garbage connections")
    check_model(good, model, "a good client is served correctly during and after the garbage; data unchanged")
    good.shutdown()

    # Memory bound: a client that asks for 40 reads of 32 MiB and never reads the replies cannot
    # make the daemon hold more than limits.max_inflight_bytes_per_connection (64 MiB) of data.
    s = socket.create_connection((d.host, d.port))
    s.recv(18, socket.MSG_WAITALL)
    s.sendall(struct.pack(">I", 3))
    s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, 9) + struct.pack(">I", 3) + b"vol" + struct.pack(">H", 0))
    while True:
        _, _, rtype, rlen = struct.unpack(">QIII", s.recv(20, socket.MSG_WAITALL))
        if rlen:
            s.recv(rlen, socket.MSG_WAITALL)
        if rtype == 1:
            break
    rss0 = int([l for l in open(f"/proc/{d.proc.pid}/status") if l.startswith("VmRSS")][0].split()[1])
    for i in range(40):
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, (i % 2) * 32 * MiB, 32 * MiB))
    time.sleep(1.5)
    rss1 = int([l for l in open(f"/proc/{d.proc.pid}/status") if l.startswith("VmRSS")][0].split()[1])
    print(f"rss growth {(rss1 - rss0) // 1024} MiB"); C.check(rss1 - rss0 < 200 * 1024, f"unread replies do not grow memory past the limit (+{(rss1 - rss0) // 1024} MiB)")
    s.close()
    h = connect(d)
    check_model(h, model, "the daemon serves normally after a client abandoned 1.25 GiB of reads")
    h.shutdown()

    # ---------------- snapshots: read-only export and changed-since context ----------------
    rc = d.stop()
    C.check(rc == 0, f"SIGTERM exits 0 (rc={rc})")
    d.start(args=["--snapshot", "vol@s1"])
    snap_model = bytes(model)
    h = connect(d, contexts=("base:allocation", "x-duplex:changed-since:s1", "qemu:dirty-bitmap:s1"))
    check_model(h, model, "data survives a restart")
    changes = [(3 * MiB + 100, 5000), (17 * MiB, 2 * CLUSTER), (40 * MiB - 1, 2)]
    for off, n in changes:
        b = rng.randbytes(n)
        h.pwrite(b, off)
        model[off:off + n] = b
    h.flush()
    dirty = [e for e in extents(h, SIZE, 0, ctx="x-duplex:changed-since:s1") if e[2] & 1]
    covered = all(any(o <= off and off + n <= o + ln for o, ln, _ in dirty) for off, n in changes)
    total = sum(ln for _, ln, _ in dirty)
    C.check(covered and total <= 8 * CLUSTER, f"changed-since:s1 covers exactly the changed clusters ({total} bytes)")
    qd = [e for e in extents(h, SIZE, 0, ctx="qemu:dirty-bitmap:s1") if e[2] & 1]
    C.check(qd == dirty, "qemu:dirty-bitmap:s1 alias agrees")
    h.shutdown()

    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(d.uri("vol"))
    ctxs = []
    h.opt_list_meta_context(lambda name: ctxs.append(name) or 0)
    C.check("x-duplex:changed-since:s1" in ctxs and "qemu:dirty-bitmap:s1" in ctxs,
            f"LIST_META_CONTEXT offers the snapshot contexts ({ctxs})")
    h.opt_abort()

    hs = connect(d, export="vol@s1")
    C.check(hs.is_read_only(), "a snapshot is exported read-only")
    C.check(E(hs.pwrite, b"w" * 512, 0) == errno.EPERM, "write to a snapshot -> EPERM")
    C.check(E(hs.trim, 512, 0) == errno.EPERM, "trim on a snapshot -> EPERM")
    C.check(E(hs.zero, 512, 0) == errno.EPERM, "write zeroes on a snapshot -> EPERM")
    ok = all(hs.pread(8 * MiB, o) == snap_model[o:o + 8 * MiB] for o in range(0, SIZE, 8 * MiB))
    C.check(ok, "the snapshot export reads the data as of the snapshot")
    hs.shutdown()

    # ---------------- shutdown: ESHUTDOWN to new requests, clean exit ----------------
    h = connect(d)
    h.pwrite(b"F" * 4096, 0, nbd.CMD_FLAG_FUA)
    model[0:4096] = b"F" * 4096
    os.kill(d.proc.pid, signal.SIGTERM)
    time.sleep(0.5)
    e = E(h.pread, 4096, 0)
    C.check(e == errno.ESHUTDOWN, f"a request during shutdown -> ESHUTDOWN (got {e})")
    try:
        h.shutdown()
    except nbd.Error:
        pass
    rc = d.proc.wait(timeout=20)
    d.proc = None
    C.check(rc == 0, f"duplexd exits 0 after SIGTERM with a client connected (rc={rc})")
    d.start()
    h = connect(d)
    check_model(h, model, "every acknowledged write is there after the restart")
    h.shutdown()


if __name__ == "__main__":
    main()
