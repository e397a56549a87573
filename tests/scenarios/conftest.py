"""Scenario tests reuse the integration stack."""

from tests.integration.conftest import stack  # noqa: F401
