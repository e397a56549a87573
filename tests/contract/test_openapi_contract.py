"""Contract: the running service keeps the promises of its own OpenAPI document.

Schemathesis (pinned in ``pyproject.toml``) generates requests from ``/openapi.json`` (valid
ones, invalid ones, and sequences for its stateful phase) with each scope's credentials
(``schemathesis.toml`` beside this file maps the three bearer schemes to them), sends them
to the API of a whole region on the real broker, and runs ``--checks all``: no 500, every
status and body as documented, bad input refused, and so on. Zero failures is the bar.

``MAAS_TEST_CONTRACT_MAX_EXAMPLES`` sets the examples per operation and phase (a short run
in CI by default; raise it for a long run by hand), ``MAAS_TEST_CONTRACT_SEED`` the seed
(fixed in CI, so a run is repeatable; another one explores other inputs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stack import Stack

pytestmark = [pytest.mark.kafka, pytest.mark.shared_region]

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = os.environ.get("MAAS_TEST_CONTRACT_MAX_EXAMPLES", "25")
SEED = os.environ.get("MAAS_TEST_CONTRACT_SEED", "20261202")
TIMEOUT_S = 600


def test_the_api_keeps_its_openapi_contract(stack: Stack) -> None:
    _, api_key = stack.new_client(tokens=1_000_000)
    env = {
        **os.environ,
        "MAAS_TEST_CONTRACT_API_KEY": api_key,
        "MAAS_TEST_CONTRACT_BILLING_TOKEN": stack.billing_token,
        "MAAS_TEST_CONTRACT_AUDITOR_TOKEN": stack.auditor_token,
    }
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{stack.base_url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        SEED,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:]
