"""Retention and co-partitioning of a region's topics, as `maas topics create` makes them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.admin import topic_specs
from core.settings import Settings

DAY_MS = 86_400_000


def specs(**overrides: object) -> dict[str, dict[str, str]]:
    configs = {}
    for t in topic_specs(Settings(**overrides)):
        assert t.config is not None, t.topic
        configs[t.topic] = t.config
    return configs


def test_topics_with_personal_details_keep_them_only_for_the_configured_retention() -> None:
    configs = specs(region="eu", personal_data_retention_ms=3 * DAY_MS)
    personal = ("eu.requests", "eu.outcomes", "eu.approved.standard", "eu.approved.ai")
    for name in (*personal, "eu.ledger-dead-letters"):
        assert configs[name]["retention.ms"] == str(3 * DAY_MS), name


def test_an_erased_record_leaves_the_changelog_within_the_retention() -> None:
    configs = specs(region="eu", personal_data_retention_ms=2 * DAY_MS)
    assert configs["eu.ledger-state-changelog"]["max.compaction.lag.ms"] == str(2 * DAY_MS)


def test_the_ledger_and_purchases_are_kept_forever() -> None:
    configs = specs(region="eu")
    for name in ("eu.ledger", "eu.purchases", "eu.ledger-checkpoints"):
        assert configs[name]["retention.ms"] == "-1", name


def test_state_topics_are_compacted() -> None:
    configs = specs(region="eu")
    assert configs["eu.ledger-state-changelog"]["cleanup.policy"] == "compact"
    assert configs["eu.clients"]["cleanup.policy"] == "compact"


def test_inputs_ledger_and_changelog_are_co_partitioned() -> None:
    partitions = {t.topic: t.num_partitions for t in topic_specs(Settings(region="eu"))}
    names = ["eu.requests", "eu.purchases", "eu.outcomes", "eu.ledger", "eu.ledger-state-changelog"]
    assert len({partitions[name] for name in names}) == 1


def test_a_retention_shorter_than_a_day_is_refused() -> None:
    # Shorter than a plausible processor outage: inputs could expire before being folded.
    with pytest.raises(ValidationError, match="personal_data_retention_ms"):
        Settings(personal_data_retention_ms=DAY_MS - 1)
