#!/bin/bash
# Records the simulator's calibration fixtures on this machine: 3 interleaved rounds of
# gpt-tiny runs (allreduce and zero3 alternating, N = 1, 2, 4, 8), then collective sweeps.
B=$(realpath "${B:-build/bin}")
OUT=${OUT:-.}; cd "$OUT"
for round in 1 2 3; do
  for n in 1 2 4 8; do
    for mode in allreduce zero3; do
      echo "$(date -u +%T) run r$round $mode $n: $(cat /proc/loadavg)" >> log.txt
      $B/pszero-launch --workers $n --sync $mode --model gpt-tiny --steps 6 --report run_${mode}_${n}_r${round}.json > out_${mode}_${n}_r${round}.txt 2>&1
      echo "  rc $?" >> log.txt
    done
  done
done
for n in 2 4 8; do
  for op in allreduce reduce_scatter allgather; do
    echo "$(date -u +%T) coll $op $n: $(cat /proc/loadavg)" >> log.txt
    $B/pszero-bench collective --op $op --ranks $n --min-bytes 1K --max-bytes 16M --step-factor 4 --iters 10 --warmup 3 --json --output coll_${op}_${n}.json > /dev/null 2> cerr_${op}_${n}.txt
    echo "  rc $?" >> log.txt
  done
done
echo "$(date -u +%T) done: $(cat /proc/loadavg)" >> log.txt
