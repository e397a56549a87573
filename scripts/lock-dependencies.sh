#!/usr/bin/env bash
# Re-resolve the Python dependencies to their newest releases within pyproject.toml's
# ranges, in a throw-away venv, and write the versions to constraints.txt. Every
# install (scripts/bootstrap.sh, the Dockerfile) takes exactly those, so a fresh clone,
# CI and an image get what the tests and the figures in docs/ ran on.
#
# To upgrade: scripts/lock-dependencies.sh, then ./test (and the benchmarks whose
# figures matter), then commit pyproject.toml and constraints.txt together.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

py=$(command -v python3.11 || command -v python3)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "lock: resolving pyproject.toml's dependencies in a fresh venv ($py)" >&2
"$py" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --disable-pip-version-check -q -e '.[dev,s3]'
cp constraints.txt "$tmp/before.txt" 2>/dev/null || : >"$tmp/before.txt"
{
  echo "# Exact versions of every Python package the project installs, written by"
  echo "# scripts/lock-dependencies.sh; pip takes them as constraints (pip install -c)."
  "$tmp/venv/bin/pip" freeze --exclude-editable
} >constraints.txt
echo "lock: wrote constraints.txt ($(grep -c '==' constraints.txt) packages); changed:" >&2
# One line per package whose version moved, came or went: "name old -> new".
join -a1 -a2 -e - -o 0,1.2,2.2 \
  <(grep '==' "$tmp/before.txt" | sed 's/==/ /' | sort -k1,1) \
  <(grep '==' constraints.txt | sed 's/==/ /' | sort -k1,1) |
  awk '$2 != $3 { printf "  %s %s -> %s\n", $1, $2, $3; n++ } END { if (!n) print "  nothing" }' >&2
