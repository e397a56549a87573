#!/usr/bin/env bash
# Shared set-up for ./run, ./test and .ci/run; cheap when nothing changed.
#   1. .venv (python3 -m venv) if missing
#   2. install -e '.[dev]' at the versions of constraints.txt, only when it or
#      pyproject.toml changed since the last install (uv, itself installed by pip: the
#      same packages in seconds where pip took a minute)
#   3. the local Kafka broker's jars (Maven, cached), unless KAFKA_BOOTSTRAP_SERVERS
#      names a cluster to use instead. Done here so downloads show up at set-up time,
#      not as a silent pause inside the first test.
#   4. the vegeta load generator in .maas/bin (go install, once) when go is on PATH: the
#      Jepsen availability run drives the service with it (tests/jepsen/vegeta.py);
#      without go that run falls back to the Python load.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "bootstrap: $*" >&2; }

if [[ ! -x .venv/bin/python ]]; then
  py=$(command -v python3.11 || command -v python3)
  say "creating .venv with $py"
  "$py" -m venv .venv
fi

stamp=.venv/.maas-dependencies.sha256
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  say "installing Python dependencies (pyproject.toml or constraints.txt changed)"
  .venv/bin/pip install --disable-pip-version-check -q -c constraints.txt uv
  .venv/bin/uv pip install --python .venv/bin/python -c constraints.txt -e '.[dev]'
  echo "$want" >"$stamp"
fi

if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
  # The broker needs a JDK (17+) and, once, Maven. Install them on a bare Debian box.
  if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      say "installing a JDK and Maven with apt-get"
      apt-get update -q && apt-get install -y -q default-jdk-headless maven
    else
      say "java and mvn are needed for the local Kafka broker (or set KAFKA_BOOTSTRAP_SERVERS)"
      exit 1
    fi
  fi
  .venv/bin/python -c '
import os
from maas.broker import resolve_classpath
jars = resolve_classpath(quiet=False).split(os.pathsep)
print(f"bootstrap: kafka broker classpath ready ({len(jars)} jars)")
' >&2
fi

vegeta=.maas/bin/vegeta
if [[ ! -x $vegeta ]]; then
  if command -v go >/dev/null; then
    say "installing vegeta v12.13.0 into .maas/bin with go install (once, ~30 s)"
    GOBIN="$PWD/.maas/bin" go install github.com/tsenart/vegeta/v12@v12.13.0
  else
    say "warning: go is not on PATH, so no vegeta in .maas/bin; the Jepsen availability run uses the Python load instead"
  fi
fi
