#!/usr/bin/env bash
# tests/support/link_proxy.py, the fault-injecting proxy of the mirror system tests, against a tiny
# echo server: forwarding, delay, cut (existing connections reset, new ones refused), blackhole
# (connections stay open, nothing gets through), heal, status counts, and a clean exit on SIGTERM.
# Free ports chosen here; every process started here is stopped by its pid.
#   tests/system/link_proxy_test.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PROXY=$here/../support/link_proxy.py
PY=/usr/bin/python3
HOST=127.0.0.71
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
work_dir duplex-link-proxy
ECHO_PORT=$(free_port)
LISTEN_PORT=$(free_port)
CONTROL_PORT=$(free_port)

$PY - "$HOST" "$ECHO_PORT" >"$work/echo.log" 2>&1 <<'PYEOF' &
import asyncio, sys
async def echo(r, w):
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    except ConnectionError:
        pass
    w.close()
async def main():
    s = await asyncio.start_server(echo, sys.argv[1], int(sys.argv[2]))
    print("ready", flush=True)
    await s.serve_forever()
asyncio.run(main())
PYEOF
pids+=($!)
for _ in $(seq 100); do grep -q ready "$work/echo.log" && break; sleep 0.05; done
grep -q ready "$work/echo.log" || { echo "FAIL - echo server did not start"; cat "$work/echo.log"; exit 1; }
$PY "$PROXY" --listen "$HOST:$LISTEN_PORT" --target "$HOST:$ECHO_PORT" --control "$HOST:$CONTROL_PORT" \
  >"$work/proxy.log" 2>&1 &
proxy_pid=$!
pids+=("$proxy_pid")
for _ in $(seq 100); do grep -q ready "$work/proxy.log" && break; sleep 0.05; done
grep -q ready "$work/proxy.log" || { echo "FAIL - proxy did not start"; cat "$work/proxy.log"; exit 1; }

fails=0
$PY - "$HOST" "$LISTEN_PORT" "$CONTROL_PORT" "$proxy_pid" <<'PYEOF' || fails=$((fails + 1))
import os, signal, socket, sys, time
host, port, cport, proxy_pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fails = 0
def ok(cond, what):
    global fails
    print(("ok - " if cond else "FAIL - ") + what, flush=True)
    fails += 0 if cond else 1
ctl = socket.create_connection((host, cport), timeout=5)
ctl_f = ctl.makefile("r")
def command(c):
    ctl.sendall((c + "\n").encode())
    return ctl_f.readline().strip()
def connect():
    return socket.create_connection((host, port), timeout=5)
def echo(s, data, timeout=2.0):
    """What comes back for `data` within timeout: bytes, b'' (EOF), 'reset' or 'timeout'."""
    s.settimeout(timeout)
    try:
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = s.recv(65536)
            if not chunk:
                return got
            got += chunk
        return got
    except socket.timeout:
        return "timeout"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"

a = connect()
ok(echo(a, b"hello") == b"hello", "forwarding: bytes echo through the proxy")
ok(command("delay 150") == "ok", "delay 150 accepted")
t0 = time.monotonic()
ok(echo(a, b"slow") == b"slow", "delayed bytes still arrive")
took = time.monotonic() - t0
ok(took >= 0.3, f"delay applies each way ({took:.3f} s >= 0.3 s)")
ok(command("delay 0") == "ok", "delay 0 accepted")

ok(command("blackhole") == "ok", "blackhole accepted")
ok(echo(a, b"lost", timeout=0.5) == "timeout", "blackhole: an open connection gets nothing back")
b = connect()
ok(echo(b, b"void", timeout=0.5) == "timeout", "blackhole: a new connection is accepted, nothing back")
st = command("status")
ok(st.startswith("ok mode=blackhole") and "active=2" in st, f"status during blackhole: {st}")
ok(command("heal") == "ok", "heal accepted")
c = connect()
ok(echo(c, b"again") == b"again", "heal: a new connection forwards")
# The healed old connection forwards again (what was sent during the blackhole is gone).
ok(echo(a, b"later") == b"later", "heal: an old connection forwards again")

ok(command("cut") == "ok", "cut accepted")
r = echo(c, b"x", timeout=2.0)
ok(r in ("reset", b""), f"cut: an open connection is reset ({r!r})")
try:
    d = connect()
    r = echo(d, b"x", timeout=2.0)
except (ConnectionResetError, ConnectionRefusedError):
    r = "reset"
ok(r in ("reset", b""), f"cut: a new connection is refused ({r!r})")
st = command("status")
ok(st.startswith("ok mode=cut") and "refused=1" in st and "active=0" in st, f"status after cut: {st}")
ok(command("heal") == "ok", "heal after cut accepted")
e = connect()
ok(echo(e, b"back") == b"back", "heal after cut: new connections forward")
ok(command("bogus").startswith("error"), "an unknown command is an error")
for s in (a, b, c):
    s.close()
# SIGTERM with a forwarded connection (e) and the control connection open: both are closed.
os.kill(proxy_pid, signal.SIGTERM)
e.settimeout(5.0)
try:
    r = e.recv(16)
except ConnectionResetError:
    r = "reset"
except socket.timeout:
    r = "timeout"
ok(r in ("reset", b""), f"SIGTERM: an open connection is closed ({r!r})")
e.close()
ctl.close()
sys.exit(1 if fails else 0)
PYEOF

rc=0
for _ in $(seq 100); do kill -0 "$proxy_pid" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$proxy_pid" 2>/dev/null; then
  echo "FAIL - proxy still running 5 s after SIGTERM"
  fails=$((fails + 1))
else
  wait "$proxy_pid" || rc=$?
  if [ "$rc" -eq 0 ] && ! grep -q Traceback "$work/proxy.log"; then echo "ok - proxy exits 0 on SIGTERM"; else
    echo "FAIL - proxy exit status $rc on SIGTERM, or a traceback in its log"
    cat "$work/proxy.log"
    fails=$((fails + 1))
  fi
fi
if [ "$fails" -ne 0 ]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "all passed"
