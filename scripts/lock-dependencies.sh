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
{
  echo "# Exact versions of every Python package the project installs, written by"
  echo "# scripts/lock-dependencies.sh; pip takes them as constraints (pip install -c)."
  "$tmp/venv/bin/pip" freeze --exclude-editable
} >constraints.txt
echo "lock: wrote constraints.txt ($(grep -c '==' constraints.txt) packages)" >&2
