"""Secrets fail closed: outside development mode, a process refuses its default secrets."""

from __future__ import annotations

import pytest

from api.app import create_app
from core.settings import DEFAULT_BILLING_TOKEN, Settings


def test_the_api_refuses_to_start_with_the_development_tokens() -> None:
    with pytest.raises(ValueError, match="MAAS_BILLING_TOKEN, MAAS_AUDITOR_TOKEN must be set"):
        create_app(Settings())


def test_an_empty_secret_is_refused_too() -> None:
    settings = Settings(billing_token="", auditor_token="a-real-one")
    with pytest.raises(ValueError, match="MAAS_BILLING_TOKEN must be set"):
        settings.require_secrets("billing_token", "auditor_token")


def test_own_secrets_are_accepted() -> None:
    Settings(billing_token="b-secret", auditor_token="a-secret").require_secrets(
        "billing_token", "auditor_token"
    )


def test_development_mode_accepts_the_defaults() -> None:
    settings = Settings.from_env({"MAAS_DEV_MODE": "1"})
    assert settings.billing_token.get_secret_value() == DEFAULT_BILLING_TOKEN
    settings.require_secrets("billing_token", "auditor_token", "audit_signing_key")
