"""Settings that only make sense together are refused together, naming the two."""

from __future__ import annotations

import pytest

from core.settings import Settings
from ledger.decision import MIN_REMEMBER_MS, REMEMBER_MS


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"MAAS_MIN_TRANSACTION_INTERVAL_MS": "5000"},
            "min_transaction_interval_ms must be below request_deadline_ms",
        ),
        (
            {"MAAS_AI_GENERATOR_DEADLINE_MS": "5000"},
            "ai_generator_deadline_ms must be below request_deadline_ms",
        ),
        (
            {"MAAS_TRANSACTION_TIMEOUT_MS": "1000", "MAAS_COMMIT_INTERVAL_MS": "1000"},
            "transaction_timeout_ms must exceed commit_interval_ms",
        ),
        (
            {"MAAS_TRANSACTION_TIMEOUT_MS": "30000"},
            "max_poll_interval_ms must exceed transaction_timeout_ms",
        ),
    ],
)
def test_settings_that_contradict_each_other_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_the_defaults_agree() -> None:
    settings = Settings.from_env({})
    assert settings.min_transaction_interval_ms < settings.request_deadline_ms


def test_the_ledger_remembers_requests_at_least_the_day_the_audit_relies_on() -> None:
    """The processor passes the personal-data retention to the fold as its memory of
    ended requests; the audit accepts a forgotten id charged again only a day on."""
    assert Settings.from_env({}).personal_data_retention_ms == REMEMBER_MS
    assert Settings.from_env({"MAAS_PERSONAL_DATA_RETENTION_MS": str(MIN_REMEMBER_MS)})
    with pytest.raises(ValueError, match="MAAS_PERSONAL_DATA_RETENTION_MS"):
        Settings.from_env({"MAAS_PERSONAL_DATA_RETENTION_MS": str(MIN_REMEMBER_MS - 1)})
