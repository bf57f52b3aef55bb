"""Start and stop duplexd for system tests (every process is stopped by its pid)."""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

DUPLEXD = os.environ.get("DUPLEXD", "duplexd")


def free_port(host):
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Duplexd:
    """One duplexd on 127.0.0.x with a pool in a temporary directory."""

    def __init__(self, workdir=None, host="127.0.0.11", pool_size="512MiB", extra_config="",
                 args=(), port=None, head_config=""):
        self.dir = workdir or tempfile.mkdtemp(prefix="duplex-nbd-")
        self.host = host
        self.port = port or free_port(host)
        self.config = os.path.join(self.dir, "duplexd.toml")
        self.log = os.path.join(self.dir, "duplexd.log")
        self.pool = os.path.join(self.dir, "p1.pool")
        with open(self.config, "w") as f:
            # head_config: top-level keys (state_dir), which TOML wants before the first table.
            f.write(f"""{head_config}
[node]
name = "n1"
site = "a"
[listen]
nbd = "{host}:{self.port}"
[[pool]]
name = "p1"
path = "{self.pool}"
create_size = "{pool_size}"
{extra_config}
""")
        self.args = list(args)
        self.proc = None

    def uri(self, export=""):
        return f"nbd://{self.host}:{self.port}/{export}"

    def start(self, args=None, expect_fail=False, timeout=20, wait_ready=False):
        """Starts duplexd; returns once it accepts NBD connections (and, with wait_ready, once it
        has logged a new event=ready line: every front-end is listening)."""
        cmd = [DUPLEXD, "--config", self.config] + (self.args if args is None else list(args))
        if not expect_fail:
            # A server already on our port would answer our client: refuse to test someone else's.
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                raise RuntimeError(f"{self.host}:{self.port} is already in use by another process")
            except OSError:
                pass
        ready_before = self.log_text().count("event=ready") if os.path.exists(self.log) else 0
        logf = open(self.log, "a")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, start_new_session=True,
                                     text=True)
        if expect_fail:
            out, _ = self.proc.communicate(timeout=timeout)
            rc = self.proc.returncode
            self.proc = None
            return rc
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"duplexd exited with {self.proc.returncode}: {self.tail()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                if self.proc.poll() is not None:
                    raise RuntimeError(f"duplexd exited with {self.proc.returncode}: {self.tail()}")
                if wait_ready and self.log_text().count("event=ready") <= ready_before:
                    time.sleep(0.05)
                    continue
                return 0
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("duplexd did not start listening")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if not self.proc:
            return None
        pid = self.proc.pid
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
            rc = self.proc.wait()
            raise RuntimeError(f"duplexd pid {pid} did not stop within {timeout}s")
        finally:
            self.proc = None
        return rc

    def tail(self, n=20):
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def log_text(self):
        with open(self.log) as f:
            return f.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc:
            self.stop(signal.SIGKILL if exc[0] else signal.SIGTERM)


class Checker:
    def __init__(self, name):
        self.name = name
        self.failures = 0
        self.checks = 0

    def check(self, cond, what):
        self.checks += 1
        if not cond:
            self.failures += 1
            print(f"FAIL: {what}", flush=True)

    def done(self):
        print(f"{self.name}: {self.checks} checks, {self.failures} failures", flush=True)
        sys.exit(1 if self.failures else 0)
