"""A ``MAAS_*`` variable that names no setting is reported, not silently ignored: a typo
would otherwise leave its setting at the default."""

from __future__ import annotations

import logging

import pytest

from core.settings import Settings


def test_a_misspelt_variable_is_named_with_the_setting_it_may_have_meant(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="core.settings"):
        settings = Settings.from_env({"MAAS_PARTITONS": "12", "MAAS_ZZ_UNHEARD_OF": "1"})
    assert settings.partitions == 6  # ignored, as it says
    assert caplog.messages == [
        "unknown setting MAAS_PARTITONS is ignored; did you mean MAAS_PARTITIONS?",
        "unknown setting MAAS_ZZ_UNHEARD_OF is ignored",
    ]


def test_settings_and_the_variables_read_elsewhere_are_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {
        "MAAS_PARTITIONS": "6",
        "MAAS_LOG_LEVEL": "DEBUG",
        "MAAS_POM": "pom.xml",
        "MAAS_TEST_CONTRACT_MAX_EXAMPLES": "300",  # the test suite's own
    }
    with caplog.at_level(logging.WARNING, logger="core.settings"):
        Settings.from_env(env)
    assert caplog.messages == []
