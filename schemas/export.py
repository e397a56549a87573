"""Publish the JSON Schema of every event contract, one file per type and version.

``python -m schemas.export`` writes ``schemas/published/<Type>.v<schema_version>.json``
(sorted keys, indented, so a diff reads well) for every model in ``schemas.events`` that
goes on a topic: the inputs, the ledger entries, ``MemeApproved`` and ``Reply``.

A published file is a promise to every reader of the log, which is kept forever: once
written it is never overwritten. Change a model compatibly and the old file stays, and
``tests/unit/test_schemas.py`` checks the current model can still read it; to publish a
new contract, raise the model's ``schema_version`` and run this again.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from schemas import events

PUBLISHED_DIR = Path(__file__).parent / "published"
PUBLISHED_MODELS: tuple[type[BaseModel], ...] = (
    # inputs
    events.ClientRegistered,
    events.TokensPurchased,
    events.SubscriptionRequested,
    events.MemeRequested,
    events.MemeGenerated,
    events.MemeFailed,
    events.ErasureRequested,
    events.ApiKeyRotationRequested,
    events.AccountQueried,
    events.RequestQueried,
    # ledger entries
    events.AccountOpened,
    events.TokensCredited,
    events.TokensCharged,
    events.MemeRejected,
    events.MemeDelivered,
    events.TokensRefunded,
    events.SubscriptionChanged,
    events.PersonalDataErased,
    events.ApiKeyRotated,
    # work and replies
    events.MemeApproved,
    events.Reply,
)


def type_name(model: type[BaseModel]) -> str:
    """The ``type`` an event carries on the wire, else the class name."""
    field = model.model_fields.get("type")
    return field.default if field is not None else model.__name__


def schema_version(model: type[BaseModel]) -> int:
    return model.model_fields["schema_version"].default


def current_schemas() -> dict[str, dict]:
    """Type name -> JSON Schema of the current model (pydantic's validation mode)."""
    return {type_name(model): model.model_json_schema() for model in PUBLISHED_MODELS}


def current_versions() -> dict[str, int]:
    """Type name -> the ``schema_version`` the current model writes."""
    return {type_name(model): schema_version(model) for model in PUBLISHED_MODELS}


def published_file_name(name: str, version: int) -> str:
    return f"{name}.v{version}.json"


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def publish(out_dir: Path = PUBLISHED_DIR) -> dict[str, str]:
    """Write every current schema not yet published; return file name -> what happened.

    What happened is ``written``, ``unchanged``, or ``kept``: a file for that version
    already exists with other content, and published versions are immutable.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    versions = current_versions()
    results: dict[str, str] = {}
    for name, schema in current_schemas().items():
        path = out_dir / published_file_name(name, versions[name])
        text = render(schema)
        if not path.exists():
            path.write_text(text, encoding="utf-8")
            results[path.name] = "written"
        elif path.read_text(encoding="utf-8") == text:
            results[path.name] = "unchanged"
        else:
            results[path.name] = "kept"
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__)
    parser.add_argument("--out", type=Path, default=PUBLISHED_DIR, help="target folder")
    args = parser.parse_args(argv)
    for file_name, result in sorted(publish(args.out).items()):
        note = ""
        if result == "kept":
            note = " (current model differs; published versions are never rewritten)"
        print(f"schema={file_name} result={result}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
