"""Check reporting for the Python halves of the system tests: "ok - ..." and "FAIL - ..." lines
as the shell halves print them, and the number of failures as the exit status."""
import sys

failures = 0


def ok(msg):
    print(f"ok - {msg}", flush=True)


def bad(msg):
    global failures
    failures += 1
    print(f"FAIL - {msg}", flush=True)


def check(cond, msg, detail=""):
    if cond:
        ok(msg)
    else:
        bad(f"{msg}: {detail}")


def finish():
    """Exits with the number of failed checks (at most 100)."""
    sys.exit(min(failures, 100))
