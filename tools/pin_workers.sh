#!/bin/bash
# Runs a program (a bench, `layer_loop`, ...) with lavapipe's two compute worker threads
# pinned to vCPUs 0 and 1, one each, as soon as they exist. A measurement aid for the 2-vCPU
# CI machine, not a library feature: about half of the unpinned processes run with both
# workers on one vCPU (docs/lavapipe-driver-notes.md section 2) and then take 1.5-1.7x as
# long; pinned, every process runs in the other mode, so A/B rounds compare like with like.
# The workers are the two threads created right after the `llvmpipe-1` thread.
#
#   tools/pin_workers.sh target/release/examples/layer_loop --shape e --steps 400
#
# Prints the program's output, then `pinned=1` (or `pinned=0` if the workers never showed).
set -u
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
out=$(mktemp)
"$@" >"$out" 2>&1 &
pid=$!
pinned=0
for _ in $(seq 1000); do
  after=0
  workers=()
  for t in $(ls /proc/$pid/task 2>/dev/null | sort -n); do
    if [ "$after" = 1 ] && [ ${#workers[@]} -lt 2 ]; then workers+=("$t"); fi
    [ "$(cat /proc/$pid/task/$t/comm 2>/dev/null)" = "llvmpipe-1" ] && after=1
  done
  if [ ${#workers[@]} -eq 2 ]; then
    taskset -p -c 0 "${workers[0]}" >/dev/null && taskset -p -c 1 "${workers[1]}" >/dev/null && pinned=1
    break
  fi
  kill -0 $pid 2>/dev/null || break
  sleep 0.005
done
wait $pid
rc=$?
cat "$out"
rm -f "$out"
echo "pinned=$pinned"
exit $rc
