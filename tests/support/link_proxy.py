#!/usr/bin/env python3
"""A fault-injecting TCP proxy for system tests of the mirror link (Python 3 asyncio, no dependencies).

    link_proxy.py --listen HOST:PORT --target HOST:PORT --control HOST:PORT

Forwards every connection made to --listen to --target, both ways. The control port takes one-line
text commands (several per connection) and answers each with one line starting "ok":

    cut          close every proxied connection with a reset and refuse new ones (reset at once)
    blackhole    keep connections open but drop every byte both ways; accept new connections
                 without forwarding them (a silent partition)
    heal         back to forwarding (connections cut stay cut; blackholed ones forward again)
    delay MS     add MS milliseconds of latency to every chunk, each direction (0: none)
    status       "ok mode=... delay_ms=... active=... accepted=... refused=... forwarded=... dropped=..."

Unknown commands answer "error ...". SIGTERM or SIGINT closes everything and exits 0. Prints
"ready" on stdout once both ports listen.
"""
import argparse
import asyncio
import signal
import socket
import struct
import sys

CHUNK = 65536


def host_port(s):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{s!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def reset(writer):
    """Closes with an RST rather than a FIN: what a peer sees when a link is cut."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class Proxy:
    def __init__(self, target):
        self.target = target
        self.mode = "forward"
        self.delay_ms = 0
        self.conns = {}  # id -> [client writer, upstream writer or None]
        self.accepted = self.refused = 0
        self.forwarded = self.dropped = 0

    async def pump(self, reader, writer):
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.mode != "forward":
                    self.dropped += len(data)
                    continue
                if self.delay_ms:
                    await asyncio.sleep(self.delay_ms / 1000)
                    if self.mode != "forward":
                        self.dropped += len(data)
                        continue
                writer.write(data)
                await writer.drain()
                self.forwarded += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            if writer.can_write_eof() and not writer.is_closing():
                try:
                    writer.write_eof()
                except OSError:
                    pass

    async def client(self, reader, writer):
        self.accepted += 1
        if self.mode == "cut":
            self.refused += 1
            reset(writer)
            return
        entry = [writer, None]
        key = id(entry)
        self.conns[key] = entry
        try:
            if self.mode == "blackhole":
                # Accepted but never forwarded: read and drop until the peer or a cut ends it.
                while True:
                    data = await reader.read(CHUNK)
                    if not data:
                        return
                    self.dropped += len(data)
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                reset(writer)
                return
            entry[1] = up_writer
            await asyncio.gather(self.pump(reader, up_writer), self.pump(up_reader, writer))
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # cancelled: the proxy is stopping (asyncio would log a cancelled handler task)
        finally:
            self.conns.pop(key, None)
            for w in entry:
                if w is not None and not w.is_closing():
                    w.close()

    def cut_all(self):
        for entry in list(self.conns.values()):
            for w in entry:
                if w is not None:
                    reset(w)

    def command(self, line):
        words = line.split()
        if not words:
            return "error empty command"
        cmd = words[0]
        if cmd == "cut" and len(words) == 1:
            self.mode = "cut"
            self.cut_all()
        elif cmd == "blackhole" and len(words) == 1:
            self.mode = "blackhole"
        elif cmd == "heal" and len(words) == 1:
            self.mode = "forward"
        elif cmd == "delay" and len(words) == 2 and words[1].isdigit():
            self.delay_ms = int(words[1])
        elif cmd == "status" and len(words) == 1:
            return (f"ok mode={self.mode} delay_ms={self.delay_ms} active={len(self.conns)} "
                    f"accepted={self.accepted} refused={self.refused} forwarded={self.forwarded} "
                    f"dropped={self.dropped}")
        else:
            return f"error unknown command {line.strip()!r}"
        return "ok"

    async def control(self, reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                writer.write((self.command(line.decode(errors="replace")) + "\n").encode())
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=host_port, required=True)
    ap.add_argument("--target", type=host_port, required=True)
    ap.add_argument("--control", type=host_port, required=True)
    args = ap.parse_args()
    proxy = Proxy(args.target)
    servers = [
        await asyncio.start_server(proxy.client, *args.listen, reuse_address=True),
        await asyncio.start_server(proxy.control, *args.control, reuse_address=True),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for s in servers:
        s.close()
    proxy.cut_all()
    # Connection and control tasks end now rather than at their peers' leisure.
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for s in servers:
        await asyncio.wait_for(s.wait_closed(), 5)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
