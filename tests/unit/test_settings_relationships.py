"""Settings that only make sense together are refused together, naming the two."""

from __future__ import annotations

import pytest

from core.settings import Settings


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
