#!/usr/bin/env bash
# The device tool carries the working tree to the GPU box (tracked and untracked-not-ignored
# files, and the carried paths) up to 64 MiB, and the fixtures alone are over that. Before a
# GPU call this deletes the tracked files the box does not need. bench/gpu.sh needs the bench
# scripts and sd2-tiny's tokenizer; a GPU parity run needs sd2-tiny's model and its reference
# run. It then prints what would travel. `git checkout -- .` brings the rest back afterwards.
#
#   bench/gpu-trim.sh [--dry-run] [CARRIED...]
#       CARRIED: the ignored paths the call will carry (.gpu, .whl), counted in the total
set -euo pipefail
cd "$(dirname "$0")/.."
dry=
[ "${1:-}" = --dry-run ] && { dry=1; shift; }

# everything under these goes, except what the box needs
drop='^(tests/fixtures/|models/|docs/.*\.png$)'
need='^tests/fixtures/sd2-tiny/(model/|run\.json$|reference\.safetensors$|image\.png$)'
mapfile -d '' gone < <(git ls-files -z | grep -zE "$drop" | grep -zvE "$need" || true)
if [ -z "$dry" ] && [ ${#gone[@]} -gt 0 ]; then
  rm -f -- "${gone[@]}"
fi
verb=deleted
[ -z "$dry" ] || verb="would delete"
echo "$verb ${#gone[@]} tracked files (git checkout -- . restores them)"

# what travels: tracked files still present, untracked files git does not ignore, carried paths
size() { xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
tree=$(git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -f "$f" ] && printf '%s\0' "$f"; done | size)
if [ -n "$dry" ]; then
  tree=$((tree - $(printf '%s\0' "${gone[@]}" | size)))
fi
carried=0
for p in "$@"; do
  carried=$((carried + $(find "$p" -type f -print0 | size)))
done
limit=$((64 * 1024 * 1024))
echo "would travel: tree $((tree / 1000000)) MB + carried $((carried / 1000000)) MB = $(((tree + carried) / 1000000)) MB of $((limit / 1000000)) MB"
[ $((tree + carried)) -le "$limit" ] || { echo "over the limit: carry less" >&2; exit 1; }
