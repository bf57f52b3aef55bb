#!/bin/bash
# duplex-fsck end to end: a clean pool (closed, and with a journal to replay) passes; corrupt
# superblocks, a truncated file, a missing file and bad usage fail with the documented exit
# status and one clear line on stderr.
# Usage: fsck_test.sh DUPLEX_FSCK DUPLEX_FSCK_MKPOOL
set -u
FSCK=$1
MKPOOL=$2
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect WANT_RC[,WANT_RC...] NAME -- command...
expect() {
  local want=$1 name=$2
  shift 3
  "$@" >"$DIR/out" 2>"$DIR/err"
  local rc=$?
  if [[ ",$want," != *",$rc,"* ]]; then
    fail "$name: exit $rc, expected $want"
    sed 's/^/  stdout: /' "$DIR/out" | head -20
    sed 's/^/  stderr: /' "$DIR/err" | head -20
    return 1
  fi
  echo "ok: $name (exit $rc)"
}
# A failure must say why on stderr in one line naming the tool.
expect_message() {
  local name=$1
  if [[ $(grep -c '^duplex-fsck: ' "$DIR/err") -lt 1 ]]; then
    fail "$name: no 'duplex-fsck: ...' line on stderr"
    cat "$DIR/err"
  fi
}

"$MKPOOL" "$DIR/pool.img" || { echo "FAIL: cannot make the test pool"; exit 1; }
"$MKPOOL" "$DIR/unclosed.img" --no-close || { echo "FAIL: cannot make the unclosed pool"; exit 1; }

expect 0 "clean pool" -- "$FSCK" "$DIR/pool.img"
grep -q '^result: clean' "$DIR/out" || fail "clean pool: no 'result: clean' line"
grep -q 'vm1-clone' "$DIR/out" || fail "clean pool: the clone is not listed"
grep -q '^replayed journal records: ' "$DIR/out" || fail "clean pool: replayed journal records not reported"

expect 0 "clean pool, JSON" -- "$FSCK" --json "$DIR/pool.img"
python3 - "$DIR/out" <<'PY' || fail "clean pool, JSON: bad report"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] is True and r["errors"] == [], r
assert r["check"]["objects"] == 3, r["check"]
assert {o["name"] for o in r["objects"]} == {"vm1", "daily", "vm1-clone"}, r["objects"]
assert r["pool"]["name"] == "fsck-test"
PY

expect 0 "unclosed pool (journal replay)" -- "$FSCK" "$DIR/unclosed.img"
before=$(sha256sum <"$DIR/unclosed.img")
expect 0 "unclosed pool again" -- "$FSCK" "$DIR/unclosed.img"
[[ $(sha256sum <"$DIR/unclosed.img") == "$before" ]] || fail "fsck modified the pool file"

# A pool in use by a writer (duplexd holds an exclusive lock) is refused, not read while it moves;
# another reader (a second fsck: shared lock) is fine.
if command -v flock >/dev/null; then
  # The lock is held by this shell on its own descriptor: nothing to clean up but the descriptor.
  exec 9<"$DIR/pool.img"
  flock -x 9
  expect 2 "pool locked by a writer" -- "$FSCK" "$DIR/pool.img" && expect_message "pool locked by a writer"
  grep -q 'in use' "$DIR/err" || fail "pool locked by a writer: message does not say the pool is in use"
  flock -u 9
  flock -s 9
  expect 0 "pool shared with another reader" -- "$FSCK" "$DIR/pool.img"
  flock -u 9
  exec 9<&-
fi

# Both superblocks (bytes 0 and 4096) damaged: nothing to trust.
cp "$DIR/pool.img" "$DIR/bad-sb.img"
for off in 0 4096; do
  head -c 64 /dev/urandom | dd of="$DIR/bad-sb.img" bs=1 seek=$((off + 16)) conv=notrunc status=none
done
expect 1,2 "both superblocks corrupt" -- "$FSCK" "$DIR/bad-sb.img" && expect_message "both superblocks corrupt"
expect 1,2 "both superblocks corrupt, JSON" -- "$FSCK" --json "$DIR/bad-sb.img" &&
  expect_message "both superblocks corrupt, JSON"

cp "$DIR/pool.img" "$DIR/trunc.img"
truncate -s $((1 << 20)) "$DIR/trunc.img"
expect 1,2 "truncated pool" -- "$FSCK" "$DIR/trunc.img" && expect_message "truncated pool"

: >"$DIR/empty.img"
expect 1,2 "empty file" -- "$FSCK" "$DIR/empty.img" && expect_message "empty file"
expect 2 "missing file" -- "$FSCK" "$DIR/nonexistent.img" && expect_message "missing file"
expect 2 "no argument" -- "$FSCK" && expect_message "no argument"
expect 2 "unknown option" -- "$FSCK" --frobnicate "$DIR/pool.img" && expect_message "unknown option"
expect 0 "help" -- "$FSCK" --help

if ((failures)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "all duplex-fsck checks passed"
