#!/usr/bin/env python3
"""Writes the seed corpora of the NBD and iSCSI session fuzzers (run from anywhere; output next to this file)."""
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))
IHAVEOPT = 0x49484156454F5054
REQ = 0x25609513


def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data


def name(n):
    return struct.pack(">I", len(n)) + n


def meta(export, *queries):
    return name(export) + struct.pack(">I", len(queries)) + b"".join(name(q) for q in queries)


def go(export, *infos):
    return name(export) + struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos)


def req(t, flags, cookie, off, length, payload=b""):
    return struct.pack(">IHHQQI", REQ, flags, t, cookie, off, length) + payload


def write(d, fname, data):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


hs = os.path.join(here, "corpus", "fuzz_nbd_handshake")
cf = struct.pack(">I", 3)
seeds = {
    "go": cf + opt(7, go(b"vol", 3, 1, 2)),
    "info_then_go": cf + opt(6, go(b"vol")) + opt(7, go(b"")),
    "list": cf + opt(3) + opt(2),
    "structured_meta_go": cf + opt(8) + opt(10, meta(b"vol", b"base:allocation", b"x-duplex:changed-since:s1"))
    + opt(7, go(b"vol")),
    "list_meta": cf + opt(8) + opt(9, meta(b"vol")) + opt(9, meta(b"vol", b"base:", b"qemu:", b"x-duplex:")),
    "export_name": struct.pack(">I", 1) + opt(1, b"vol"),
    "export_name_unknown": cf + opt(1, b"nope"),
    "starttls": cf + opt(5) + opt(3),
    "unknown_opts": cf + opt(99, b"abc") + opt(11) + opt(4) + opt(7, go(b"ro")),
    "bad_go": cf + opt(7, b"\0\0\0\x09vol") + opt(7, go(b"vol")),
    "oversized": cf + struct.pack(">QII", IHAVEOPT, 3, 70000) + b"\0" * 70000 + opt(2),
    "bad_magic": cf + struct.pack(">QII", 0x1122334455667788, 3, 0),
    "bad_flags": struct.pack(">I", 0xff),
    "abort": cf + opt(2),
    "go_then_requests": cf + opt(8) + opt(10, meta(b"vol", b"base:allocation")) + opt(7, go(b"vol"))
    + req(1, 0, 1, 0, 8, b"ABCDEFGH") + req(0, 0, 2, 0, 8) + req(7, 0, 3, 0, 65536) + req(2, 0, 4, 0, 0),
}
for k, v in seeds.items():
    for policy in (0x1f, 0x00, 0x80):
        write(hs, f"{k}-{policy:02x}", bytes([policy]) + v)

rq = os.path.join(here, "corpus", "fuzz_nbd_request")
streams = {
    "write_read": req(1, 0, 1, 4096, 16, b"0123456789abcdef") + req(0, 0, 2, 4096, 16),
    "fua_flush": req(1, 1, 1, 0, 4, b"abcd") + req(3, 0, 2, 0, 0) + req(3, 1, 3, 0, 0),
    "trim_zero": req(4, 0, 1, 0, 65536) + req(6, 2, 2, 100, 5000) + req(6, 16, 3, 0, 65536) + req(6, 18, 4, 0, 1),
    "cache": req(5, 0, 1, 0, 131072),
    "block_status": req(7, 0, 1, 0, 262144) + req(7, 8, 2, 1, 100),
    "errors": req(0, 0, 1, 262143, 2) + req(1, 0, 2, 262143, 2, b"xy") + req(0, 4, 3, 0, 33 << 20)
    + req(0, 0, 4, 0, 0) + req(99, 0, 5, 0, 1) + req(3, 0, 6, 1, 1) + req(0, 0x40, 7, 0, 1),
    "oversize_write": req(1, 0, 1, 0, (32 << 20) + 1) + b"z" * 64,
    "df": req(0, 4, 1, 0, 65536),
    "disc": req(2, 0, 1, 0, 0) + req(0, 0, 2, 0, 1),
    "bad_magic": struct.pack(">IHHQQI", 0xdeadbeef, 0, 0, 1, 0, 1),
    "truncated": req(1, 0, 1, 0, 4096, b"short"),
}
for k, v in streams.items():
    for b0 in (0x01, 0x00, 0x03, 0x1d):
        write(rq, f"{k}-{b0:02x}", bytes([b0]) + v)


# iSCSI session: byte 0 bit 0 = log in first, bit 1 = digests; then full feature phase PDUs.
def bhs(op, flags, itt, lun=0, f20=0, cmdsn=1, f28=0, f32=0, f36=0, f40=0, f44=0, data=b"", cdb=b"", imm=False):
    b = bytearray(48)
    b[0] = op | (0x40 if imm else 0)
    b[1] = flags
    b[5:8] = len(data).to_bytes(3, "big")
    b[8:16] = lun.to_bytes(8, "big")
    struct.pack_into(">IIIIIIII", b, 16, itt, f20, cmdsn, f28, f32, f36, f40, f44)
    if cdb:
        b[32:32 + len(cdb)] = cdb
    return bytes(b) + data + b"\0" * (-len(data) % 4)


def cdb10(op, lba, n):
    return struct.pack(">BBIBHB", op, 0, lba, 0, n, 0)


ss = os.path.join(here, "corpus", "fuzz_iscsi_session")
sessions = {
    "nop": bhs(0x00, 0x80, 1, f20=0xFFFFFFFF, data=b"ping"),
    "write_read": bhs(0x01, 0xA0, 2, f20=512, cdb=cdb10(0x2A, 0, 1), data=b"A" * 512)
    + bhs(0x01, 0xC0, 3, f20=512, cmdsn=2, cdb=cdb10(0x28, 0, 1)),
    "unsolicited": bhs(0x01, 0x20, 4, f20=1024, cdb=cdb10(0x2A, 8, 2), data=b"B" * 512)
    + bhs(0x05, 0x80, 4, f20=0xFFFFFFFF, f40=512, data=b"C" * 512),
    "r2t": bhs(0x01, 0xA0, 5, f20=262144 * 2, cdb=cdb10(0x2A, 0, 1024)),
    "tmf": bhs(0x01, 0xA0, 6, f20=4096, cdb=cdb10(0x2A, 0, 8)) + bhs(0x02, 0x81, 7, f20=6, cmdsn=2, f32=1),
    "lun_reset": bhs(0x02, 0x85, 8, cmdsn=1, imm=True),
    "text": bhs(0x04, 0x80, 9, f20=0xFFFFFFFF, data=b"SendTargets=All\0"),
    "logout": bhs(0x06, 0x80, 10),
    "reject": bhs(0x25, 0x80, 11) + bhs(0x10, 0x80, 12),
    "report_luns": bhs(0x01, 0xC0, 13, f20=256, cdb=struct.pack(">BBBBBBIBB", 0xA0, 0, 0, 0, 0, 0, 256, 0, 0)),
}
for k, v in sessions.items():
    for b0 in (0x01, 0x00):
        write(ss, f"{k}-{b0:02x}", bytes([b0]) + v)
# fuzz_api_request: method byte (index into GET POST PUT PATCH DELETE HEAD OPTIONS ""; bit 7 set =
# no node applies changes), then path, query, Authorization and body separated by NUL bytes.
ar = os.path.join(here, "corpus", "fuzz_api_request")
M = {"GET": 0, "POST": 1, "PUT": 2, "PATCH": 3, "DELETE": 4, "HEAD": 5}
AUTH = b"Bearer fuzz"


def api(method, path, body=b"", query=b"", auth=AUTH, pending=False):
    return bytes([M[method] | (0x80 if pending else 0)]) + path + b"\0" + query + b"\0" + auth + b"\0" + body


requests = {
    "health": api("GET", b"/v1/health", auth=b""),
    "metrics": api("GET", b"/metrics", auth=b""),
    "status": api("GET", b"/v1/status"),
    "nodes": api("GET", b"/v1/nodes"),
    "node": api("GET", b"/v1/nodes/n1"),
    "pools": api("GET", b"/v1/pools"),
    "volumes": api("GET", b"/v1/volumes"),
    "volume": api("GET", b"/v1/volumes/vol"),
    "create": api("POST", b"/v1/volumes", b'{"name":"v2","size":"10GiB","replicas":1,"preferred_site":"a","pool":"p0"}'),
    "create_pending": api("POST", b"/v1/volumes", b'{"name":"v2","size":4096}', b"wait=true&timeout=5", pending=True),
    "create_nowait": api("POST", b"/v1/volumes", b'{"name":"v2","size":"512MiB"}', b"wait=false"),
    "clone": api("POST", b"/v1/volumes", b'{"name":"c","clone_of":"vol@s1","size":"2MiB"}'),
    "create_bad": api("POST", b"/v1/volumes", b'{"name":"-x","size":"1.5G","extra":[1,{"a":null}]}'),
    "grow": api("PATCH", b"/v1/volumes/vol", b'{"size":"2MiB","generation":1}'),
    "shrink": api("PATCH", b"/v1/volumes/vol", b'{"size":4096}'),
    "delete": api("DELETE", b"/v1/volumes/vol", query=b"timeout=1"),
    "snapshots": api("GET", b"/v1/volumes/vol/snapshots"),
    "snapshot": api("POST", b"/v1/volumes/vol/snapshots", b'{"name":"s2"}'),
    "snapshot_delete": api("DELETE", b"/v1/volumes/vol/snapshots/s1"),
    "export": api("GET", b"/v1/volumes/vol/export"),
    "export_put": api("PUT", b"/v1/volumes/vol/export", b'{"nbd":false,"iscsi":true,"default_access":"read-only"}'),
    "acl_put": api("PUT", b"/v1/volumes/vol/export/acl/iqn.1994-05.com.redhat:host1", b'{"access":"none"}'),
    "acl_delete": api("DELETE", b"/v1/volumes/vol/export/acl/iqn.1994-05.com.redhat:host1"),
    "no_token": api("GET", b"/v1/volumes", auth=b""),
    "wrong_token": api("GET", b"/v1/volumes", auth=b"Bearer fuzy"),
    "unknown_route": api("GET", b"/v1/volumes/vol/nope/x"),
    "bad_method": api("PUT", b"/v1/volumes"),
    "bad_json": api("POST", b"/v1/volumes", b'{"name":"x","size":'),
    "utf8": api("POST", b"/v1/volumes/vol/snapshots", b'{"name":"\xff\xfe"}'),
}
for k, v in requests.items():
    write(ar, k, v)

# fuzz_mirror_wire: byte 0 even = parse the messages, odd = feed them to a Channel; then a stream
# of mirror link messages (96-byte header, big-endian, CRC32C over bytes 0..91; see wire.h).
def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283
VOL = bytes(range(16))


def mlink(t, payload=b"", op=0, flags=0, status=0, rid=0, gen=1, seq=0, off=0, length=0):
    pcrc = crc32c(payload) if payload else 0
    h = struct.pack(">IHHBBHiQ16sQQQQII12x", 0x44584D4C, 1, t, op, flags, 0, status, rid, VOL, gen, seq, off,
                    length, len(payload), pcrc)
    assert len(h) == 92
    return h + struct.pack(">I", crc32c(h)) + payload


mw = os.path.join(here, "corpus", "fuzz_mirror_wire")
links = {
    "hello": mlink(1, b'{"node":"a","volume":"00010203-0405-0607-0809-0a0b0c0d0e0f","generation":1}', rid=1),
    "ping_pong": mlink(3, off=123456789) + mlink(4, off=123456789),
    "write": mlink(5, b"W" * 4096, op=1, flags=1, rid=2, off=8192, length=4096),
    "replicate": mlink(7, b"R" * 512, op=1, rid=3, seq=77, off=0, length=512)
    + mlink(7, op=2, flags=2, rid=4, seq=78, off=1 << 20, length=1 << 20) + mlink(7, op=3, rid=5, seq=79, length=4096),
    "read_flush": mlink(9, rid=6, off=4096, length=4096) + mlink(11, rid=7),
    "replies": mlink(6, rid=1, status=0) + mlink(8, rid=2, status=8) + mlink(10, b"D" * 64, rid=3),
    "resync": mlink(13, b"S" * 8192, op=1, rid=8, off=4 << 20, length=8192),
    "state_close": mlink(15, b'{"members":["a"],"generation":2}') + mlink(16, b"leaving"),
    "bad_crc": mlink(5, b"abc", op=1, rid=9)[:-1] + b"x",
    "truncated": mlink(5, b"Z" * 1000, op=1, rid=10)[:500],
}
for k, v in links.items():
    for b0 in (0x00, 0x01):
        write(mw, f"{k}-{b0:02x}", bytes([b0]) + v)
print("seeds written")
