"""The verdict: every check over a history and the topics' records, and the stats."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tests.jepsen.checker.accounts import check_accounts, check_checkpoints, check_writes
from tests.jepsen.checker.checks import (
    check_kinds,
    check_lookups,
    check_memes,
    check_requests,
    check_unsent_charges,
)
from tests.jepsen.checker.context import Context
from tests.jepsen.checker.fold import fold_ledger
from tests.jepsen.checker.log import parse_log
from tests.jepsen.checker.model import MAX_PROBLEM_LINES, Json, Problems, Record, Verdict, topics_of
from tests.jepsen.checker.ops import index_history
from tests.jepsen.checker.replay import check_replay


def check_records(history: list[Json], records: Iterable[Record], region: str) -> Verdict:
    """Every check, over a history and the topics' records already in memory."""
    problems = Problems()
    log = parse_log(records, region, problems)
    ctx = Context(
        log,
        fold_ledger(log.entries, problems),
        index_history(history, problems),
        problems,
        Counter(),
    )
    check_requests(ctx)
    check_memes(ctx)
    check_unsent_charges(ctx)
    check_accounts(ctx)
    check_checkpoints(ctx, topics_of(region).ledger)
    check_writes(ctx)
    check_lookups(ctx)
    check_replay(ctx)
    check_kinds(ctx)
    return _verdict(ctx)


def _verdict(ctx: Context) -> Verdict:
    stats = ctx.stats
    stats["history_lines"] = sum(len(op.attempts) for op in ctx.ops.values())
    stats["logical_ops"] = len(ctx.ops)
    stats["retries"] = stats["history_lines"] - len(ctx.ops)
    stats["clients"] = len(ctx.clients())
    stats["ledger_entries"] = len(ctx.log.entries)
    stats["ledger_clients"] = len(ctx.fold.accounts)
    stats["problems"] = len(ctx.problems.lines)
    for check, count in ctx.problems.by_check.items():
        stats[f"problems_{check}"] = count
    lines = ctx.problems.lines[:MAX_PROBLEM_LINES]
    if len(ctx.problems.lines) > MAX_PROBLEM_LINES:
        lines.append(f"... and {len(ctx.problems.lines) - MAX_PROBLEM_LINES} more problems")
    return Verdict(ok=not ctx.problems.lines, problems=lines, stats=dict(stats))
