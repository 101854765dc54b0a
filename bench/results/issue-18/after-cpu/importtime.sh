#!/bin/bash
# Start-up of two mirror versions, alternated: `python -X importtime -m mirror --version`'s
# cumulative microseconds for mirror.cli, and the process's CPU seconds (user + system).
#   bench/results/issue-18/after-cpu/importtime.sh 8 c381cf2 6280f6e > importtime.txt
# Each line: LABEL(before|after) MIRROR_CLI_US CPU_S.
set -euo pipefail
repeats=$1
python=$(cd "$(dirname "$0")/../../../.." && pwd)/.venv/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/before" "$work/after"
git archive "$2" mirror | tar -x -C "$work/before"
git archive "$3" mirror | tar -x -C "$work/after"
for _ in $(seq 1 "$repeats"); do
  for name in before after; do
    cd "$work/$name"  # python -m finds mirror/ here first
    cum=$("$python" -X importtime -m mirror --version 2>&1 >/dev/null |
      awk -F'|' '$3 ~ /^ mirror\.cli$/ {gsub(/ /, "", $2); print $2}')
    cpu=$({ /usr/bin/time -f "%U %S" "$python" -m mirror --version >/dev/null; } 2>&1 |
      awk '{print $1 + $2}')
    echo "$name $cum $cpu"
  done
done
