#!/usr/bin/env bash
# The consistency checker under faults (docs/mirror.md; issue 7 item 6). A mirrored volume on two
# duplexd nodes; tests/system/mirror_checker.py writes tagged 4 KiB blocks and reads them through
# both nodes' NBD exports at once (a client whose node fails goes on through the other, as a
# multipath host would), while this script injects faults at random moments: kill -9 of either
# daemon (restarted a few seconds later), and cuts of the replication link (healed later).
# After each trial everything is healed, the replicas must come back in sync, and then:
#   - every acknowledged write is readable through both nodes, and both nodes return the same;
#   - every read during the run matched a linearizable register per block (never a stale value,
#     never back in time, never bytes no write produced);
#   - an online verify of the replicas finds no difference.
#   DUPLEXD=... [CHECK_TRIALS=1] [CHECK_SECONDS=30] [CHECK_SEED=N] tests/system/mirror_consistency.sh
# The CI runs the short default; bench/mirror-consistency.sh runs it long.
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
HOST=127.0.0.1
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
# shellcheck source-path=SCRIPTDIR source=mirror_lib.sh
source "$here/mirror_lib.sh"
work_dir duplex-mirror-check
TRIALS=${CHECK_TRIALS:-1}
RUN_SECONDS=${CHECK_SECONDS:-30}
SEED=${CHECK_SEED:-$((RANDOM))}
RANDOM=$SEED
echo "seed $SEED, $TRIALS trial(s) of $RUN_SECONDS s"

# Short timeouts so that a fault is decided in a few seconds, not tens.
mirror_cluster "$TEST_MIRROR_TOML"
api POST /v1/volumes '{"name": "c", "size": 67108864, "replicas": 2, "preferred_site": "a"}' >/dev/null
if until_vol 60 c "$IN_SYNC"; then ok "volume c: both replicas in sync"; else bad "volume c never in sync"; exit 1; fi
for n in n1 n2; do
  for _ in $(seq 100); do nbdinfo --size "$(nbd_uri $n c)" >/dev/null 2>&1 && break; sleep 0.1; done
done

faults=0
writes=0
reads=0
for trial in $(seq "$TRIALS"); do
  log="$work/trial-$trial.jsonl"
  $PY "$here/mirror_checker.py" run --uri "$(nbd_uri n1 c)" --uri "$(nbd_uri n2 c)" --seconds "$RUN_SECONDS" \
    --seed "$((SEED + trial))" --log "$log" >"$work/run-$trial.out" 2>&1 &
  checker=$!
  pids+=("$checker")
  sleep 2
  while kill -0 "$checker" 2>/dev/null; do
    hold=$((1 + RANDOM % 4))
    case $((RANDOM % 3)) in
      0) echo "  fault: kill -9 n1 for ${hold}s"; kill_node n1; sleep "$hold"; start_node n1 ;;
      1) echo "  fault: kill -9 n2 for ${hold}s"; kill_node n2; sleep "$hold"; start_node n2 ;;
      2) echo "  fault: link cut for ${hold}s"; proxy cut >/dev/null; sleep "$hold"; proxy heal >/dev/null ;;
    esac
    faults=$((faults + 1))
    sleep $((2 + RANDOM % 3))
  done
  wait "$checker" || true
  cat "$work/run-$trial.out"
  if until_vol 180 c "$IN_SYNC"; then ok "trial $trial: the replicas are back in sync"; else bad "trial $trial: not back in sync"; continue; fi
  if out=$($PY "$here/mirror_checker.py" check --uri "$(nbd_uri n1 c)" --uri "$(nbd_uri n2 c)" --log "$log" 2>&1); then
    ok "trial $trial: $(echo "$out" | head -1)"
  else
    bad "trial $trial: $out"
  fi
  writes=$((writes + $(echo "$out" | $PY -c "import json,sys; print(json.loads(sys.stdin.readline()).get('writes_acknowledged', 0))" 2>/dev/null || echo 0)))
  reads=$((reads + $(echo "$out" | $PY -c "import json,sys; print(json.loads(sys.stdin.readline()).get('reads_checked', 0))" 2>/dev/null || echo 0)))
  # Online verify on the owner: the replicas hold the same bytes.
  req=$(api POST /v1/volumes/c/verify '{}' | $PY -c "import json,sys; print(json.load(sys.stdin)['verify_request'])" || echo 0)
  if until_vol 120 c "any(x.get('role')=='owner' and x.get('verify_request')==$req and x.get('verify_state')=='done' and x.get('verify_checked',0)>=d['size'] and x.get('verify_mismatches')==0 for x in d['replicas'])"; then
    ok "trial $trial: online verify found the replicas equal"
  else
    bad "trial $trial: online verify did not find the replicas equal"
  fi
done

for n in n2 n1; do
  if stop_node "$n"; then ok "$n stops cleanly"; else bad "$n exit status on SIGTERM"; fi
done
echo "summary: seed $SEED, trials $TRIALS, faults injected $faults, acknowledged writes checked $writes, reads checked $reads"
if [ "$fails" -ne 0 ]; then
  for n in n1 n2; do echo "--- $n.log (tail)"; tail -n 60 "$work/$n.log"; done
  echo "$fails check(s) failed"
  exit 1
fi
echo "all checks passed"
