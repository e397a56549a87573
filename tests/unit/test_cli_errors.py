"""A mistake a user can fix ends a ``maas`` command with one line naming it, not a
traceback, and before anything starts: a bad setting, a default secret outside
development mode, a port out of range, a missing file, a broker that does not answer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from maas import audit_cli
from maas.broker import free_port
from maas.cli import main


@pytest.fixture(autouse=True)
def production(monkeypatch: pytest.MonkeyPatch) -> None:
    """No development mode and no broker named, whatever the environment says."""
    for name in ("MAAS_DEV_MODE", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)


def test_a_bad_setting_names_its_variable_and_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAAS_PARTITIONS", "six")
    monkeypatch.setenv("MAAS_REGION", "Eu_West")
    assert main(["topics", "create"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maas topics: ") and err.count("\n") == 1
    assert "MAAS_PARTITIONS='six': Input should be a valid integer" in err
    assert "MAAS_REGION='Eu_West': String should match pattern" in err
    assert "Traceback" not in err


def test_a_transaction_timeout_the_brokers_refuse_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAAS_TRANSACTION_TIMEOUT_MS", "1000000")  # over 15 minutes
    assert main(["processor"]) == 2
    assert "MAAS_TRANSACTION_TIMEOUT_MS='1000000': Input should be less than or equal to " in (
        capsys.readouterr().err
    )


def test_settings_that_contradict_each_other_are_one_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAAS_TRANSACTION_TIMEOUT_MS", "1000")
    monkeypatch.setenv("MAAS_COMMIT_INTERVAL_MS", "1000")
    assert main(["replay"]) == 2
    assert capsys.readouterr().err == (
        "maas replay: transaction_timeout_ms must exceed commit_interval_ms\n"
    )


def test_up_refuses_the_development_secrets_before_it_starts_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    assert main(["up"]) == 2
    assert time.monotonic() - started < 2  # it started no broker and no child
    assert capsys.readouterr().err.startswith(
        "maas up: MAAS_BILLING_TOKEN, MAAS_AUDITOR_TOKEN, MAAS_AUDIT_SIGNING_KEY must be set"
    )


def test_the_api_refuses_the_development_secrets_before_it_takes_its_port(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["api", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maas api: MAAS_BILLING_TOKEN, MAAS_AUDITOR_TOKEN must be set")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["up", "--port", "99999"], "argument --port: a TCP port is 1-65535, not 99999"),
        (["up", "--port", "eighty"], "argument --port: not a whole number: 'eighty'"),
        (["api", "--port", "0"], "argument --port: a TCP port is 1-65535, not 0"),
        (["kafka", "start", "--port", "-1"], "argument --port: a TCP port is 1-65535, not -1"),
        (["restart", "--timeout", "0"], "argument --timeout: must be at least 1, not 0"),
        (["kafka", "start", "--timeout", "-5"], "argument --timeout: must be more than 0 seconds"),
        (["kafka", "start", "--nodes", "0"], "argument --nodes: must be at least 1, not 0"),
        (["kafka", "logs", "-n", "-3"], "argument -n/--lines: must be at least 1, not -3"),
        (["audit", "verify", "--file", "/no/such/dump"], "argument --file: no such file"),
        (["audit", "dump", "--file", "/no/such/folder/d.jsonl"], "no such folder: /no/such"),
        (["audit", "dump", "--file", "/tmp"], "argument --file: a folder, not a file: /tmp"),
        (["export", "--out", __file__], "argument --out: a file, not a folder"),
    ],
)
def test_a_bad_argument_is_refused_naming_its_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_node_of_a_cluster_that_is_not_there_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["kafka", "logs", "--home", str(tmp_path), "--node", "9"]) == 2
    assert "--node 9: a single broker is node 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--as-of-time", "yesterday", "--as-of-time: not an ISO 8601 time"),
        ("--as-of-offset", "1:2:3", "--as-of-offset: not a whole number: '2:3'"),
    ],
)
def test_a_bad_replay_position_names_its_flag(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", flag, value]) == 2
    assert message in capsys.readouterr().err


def test_a_broker_that_does_not_answer_ends_a_one_shot_command_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")  # nobody there
    monkeypatch.setattr(audit_cli, "METADATA_TIMEOUT_S", 1.0)
    dump = tmp_path / "ledger.jsonl"
    dump.write_text("")
    assert main(["audit", "verify"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("%")]
    assert len(lines) == 1, lines  # librdkafka's own lines (%3|...) aside
    assert lines[0].startswith("maas audit: Kafka: ")
    assert "is a broker running at KAFKA_BOOTSTRAP_SERVERS" in lines[0]

    # A dump is read from its file, its checkpoints from Kafka: the way without it is named.
    assert main(["audit", "verify", "--file", str(dump)]) == 1
    err = capsys.readouterr().err
    assert "the checkpoints come from Kafka" in err
    assert "--no-checkpoints checks the dump's chains alone" in err
    assert main(["audit", "verify", "--file", str(dump), "--no-checkpoints"]) == 0


def test_export_never_removes_a_folder_that_is_not_an_earlier_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``maas export --out .`` in this repository removed ``ledger/``, the domain package:
    an export replaces ``DIR/<table>`` whole. Refused before any table is touched."""
    earlier = tmp_path / "requests" / "day=2026-12-07"
    earlier.mkdir(parents=True)
    (earlier / "part-00000.parquet").write_bytes(b"an earlier export")
    package = tmp_path / "ledger"
    package.mkdir()
    (package / "fold.py").write_text("source code\n")

    assert main(["export", "--out", str(tmp_path)]) == 2

    assert capsys.readouterr().err == (
        f"maas export: {package} is not an earlier export: not replaced; choose another --out\n"
    )
    assert (package / "fold.py").read_text() == "source code\n"
    assert (earlier / "part-00000.parquet").exists()  # nothing replaced either
