"""The event contracts stay readable: every published schema version, every payload.

The ledger topic is kept forever, so a reader built from today's models must accept
every message written under a published contract. ``incompatibilities`` below is the
check: given a published JSON Schema (old) and the current one (new), it lists every
way a message valid under the old one could be refused by the new one:

- a property of the old schema is gone (models forbid extra fields, so old messages
  that carry it would fail);
- a property's type no longer accepts what it accepted ("type", "$ref", "anyOf" /
  "oneOf", "enum", "const", after resolving ``$defs``; each old alternative must still
  be accepted by some new one, so ``int`` -> ``int | None`` is fine, ``int`` -> ``str``
  is not);
- a property became required, or a new required property appeared;
- enum values were removed, or a bound was tightened (min/max, lengths, pattern).

Titles, descriptions and defaults are documentation and are ignored.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from schemas import events
from schemas.events import (
    AccountOpened,
    AccountQueried,
    AccountView,
    ApiKeyRotated,
    ApiKeyRotationRequested,
    ClientRegistered,
    ErasureRequested,
    ErasureView,
    MemeApproved,
    MemeDelivered,
    MemeFailed,
    MemeGenerated,
    MemeRejected,
    MemeRequested,
    PersonalDataErased,
    RefundReason,
    RejectReason,
    ReplacedKey,
    Reply,
    RequestQueried,
    RequestView,
    SubscriptionChanged,
    SubscriptionRequested,
    TokensCharged,
    TokensCredited,
    TokensPurchased,
    TokensRefunded,
    dump,
    entry_hash,
    parse_entry,
    parse_input,
)
from schemas.export import (
    PUBLISHED_DIR,
    current_schemas,
    current_versions,
    publish,
    published_file_name,
    render,
)

Schema = dict[str, Any]
PUBLISHED_FILE = re.compile(r"^(?P<name>[A-Za-z]+)\.v(?P<version>\d+)\.json$")
PUBLISHED_FILES = sorted(PUBLISHED_DIR.glob("*.json"))

# --- the compatibility checker --------------------------------------------------------

# Bounds that, when they move this way, refuse values the old schema accepted.
LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems")
UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")


def incompatibilities(old: Schema, new: Schema) -> list[str]:
    """Why a message valid under ``old`` might be refused by ``new``; [] if none.

    Each problem names the field by its path, e.g. ``TokensPurchased.tokens``.
    """
    checker = _Checker(old.get("$defs", {}), new.get("$defs", {}))
    checker.node(old, new, old.get("title", "<root>"))
    return checker.problems


class _Checker:
    def __init__(self, old_defs: Schema, new_defs: Schema) -> None:
        self.old_defs = old_defs
        self.new_defs = new_defs
        self.problems: list[str] = []
        self._seen: set[tuple[str, str]] = set()  # ($ref old, $ref new) already compared

    def node(self, old: Schema, new: Schema, path: str) -> None:
        old, old_ref = _resolve(old, self.old_defs)
        new, new_ref = _resolve(new, self.new_defs)
        if old_ref and new_ref:
            if (old_ref, new_ref) in self._seen:
                return  # recursive models: compared once is enough
            self._seen.add((old_ref, new_ref))
        old_options = _alternatives(old, self.old_defs)
        new_options = _alternatives(new, self.new_defs)
        if len(old_options) == 1 and len(new_options) == 1:
            self._single(old_options[0], new_options[0], path)
            return
        # A union: every old alternative must still be accepted by some new one.
        for option in old_options:
            trials = [self._trial(option, candidate, path) for candidate in new_options]
            if any(not problems for problems, _ in trials):
                continue
            # The same model under the same title that changed inside: name the inner
            # field rather than the whole alternative.
            same_model = [
                problems for problems, candidate in trials if _same_model(option, candidate)
            ]
            if same_model:
                # Not inlined: inside extend() mypy infers min() over Iterable[str] and
                # then rejects key=len.
                fewest = min(same_model, key=len)
                self.problems.extend(fewest)
            else:
                self.problems.append(
                    f"{path}: {_describe(option)} is no longer accepted "
                    f"(now {' | '.join(_describe(o) for o in new_options)})"
                )

    def _trial(self, old: Schema, new: Schema, path: str) -> tuple[list[str], Schema]:
        trial = _Checker(self.old_defs, self.new_defs)
        trial._seen = set(self._seen)
        trial._single(old, new, path)
        return trial.problems, new

    def _single(self, old: Schema, new: Schema, path: str) -> None:
        old_type, new_type = old.get("type"), new.get("type")
        # JSON "integer" values are also "number" values: widening int -> float is fine.
        if old_type != new_type and not (old_type == "integer" and new_type == "number"):
            self.problems.append(f"{path}: type {old_type} -> {new_type}")
            return
        if "const" in new and old.get("const", object()) != new["const"]:
            self.problems.append(f"{path}: const {old.get('const')!r} -> {new['const']!r}")
        if "enum" in new:
            removed = [v for v in old.get("enum", ["<any value>"]) if v not in new["enum"]]
            if removed:
                self.problems.append(f"{path}: enum values removed {removed}")
        self._bounds(old, new, path)
        if old_type == "object" or "properties" in old:
            self._object(old, new, path)
        if old_type == "array" and "items" in old:
            self.node(old["items"], new.get("items", {}), f"{path}[]")

    def _bounds(self, old: Schema, new: Schema, path: str) -> None:
        for key in LOWER_BOUNDS:
            if key in new and (key not in old or new[key] > old[key]):
                self.problems.append(f"{path}: {key} tightened {old.get(key)} -> {new[key]}")
        for key in UPPER_BOUNDS:
            if key in new and (key not in old or new[key] < old[key]):
                self.problems.append(f"{path}: {key} tightened {old.get(key)} -> {new[key]}")
        if "pattern" in new and old.get("pattern") != new["pattern"]:
            self.problems.append(f"{path}: pattern {old.get('pattern')!r} -> {new['pattern']!r}")

    def _object(self, old: Schema, new: Schema, path: str) -> None:
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        for name, old_prop in old_props.items():
            if name not in new_props:
                self.problems.append(f"{path}.{name}: removed")
            else:
                self.node(old_prop, new_props[name], f"{path}.{name}")
        old_required = set(old.get("required", ()))
        for name in sorted(set(new.get("required", ())) - old_required):
            was = "optional" if name in old_props else "absent"
            self.problems.append(f"{path}.{name}: now required (was {was})")
        if old.get("additionalProperties", True) is not False and (
            new.get("additionalProperties", True) is False
        ):
            self.problems.append(f"{path}: no longer accepts additional properties")


def _resolve(schema: Schema, defs: Schema) -> tuple[Schema, str]:
    """Follow ``$ref`` into ``$defs``; return the target and the last ref followed."""
    ref = ""
    while "$ref" in schema:
        ref = schema["$ref"]
        schema = defs[ref.removeprefix("#/$defs/")]
    return schema, ref


def _alternatives(schema: Schema, defs: Schema) -> list[Schema]:
    """The flat list of alternatives of an ``anyOf``/``oneOf`` (refs resolved)."""
    options = schema.get("anyOf") or schema.get("oneOf")
    if not options:
        return [schema]
    flat: list[Schema] = []
    for option in options:
        flat.extend(_alternatives(_resolve(option, defs)[0], defs))
    return flat


def _same_model(old: Schema, new: Schema) -> bool:
    return (
        "title" in old
        and old.get("title") == new.get("title")
        and old.get("type") == new.get("type")
    )


def _describe(schema: Schema) -> str:
    for key in ("const", "enum", "title"):
        if key in schema:
            return f"{key} {schema[key]!r}"
    return f"type {schema.get('type')}"


# --- every published version is still readable ---------------------------------------


def test_every_type_is_published_at_its_current_version() -> None:
    # A new type or a version bump must come with `python -m schemas.export`.
    versions = current_versions()
    missing = [
        published_file_name(name, version)
        for name, version in versions.items()
        if not (PUBLISHED_DIR / published_file_name(name, version)).exists()
    ]
    assert missing == []
    assert len(PUBLISHED_FILES) >= len(versions)


@pytest.mark.parametrize("path", PUBLISHED_FILES, ids=lambda p: p.name)
def test_current_model_reads_every_published_version(path: Path) -> None:
    match = PUBLISHED_FILE.match(path.name)
    assert match, f"unexpected file name {path.name}"
    name, version = match["name"], int(match["version"])
    current, versions = current_schemas(), current_versions()
    assert name in current, f"type {name} was published and no longer exists"
    assert versions[name] >= version, f"{name} went back from v{version} to v{versions[name]}"

    published = json.loads(path.read_text(encoding="utf-8"))

    assert incompatibilities(published, current[name]) == []


@pytest.mark.parametrize("path", PUBLISHED_FILES, ids=lambda p: p.name)
def test_published_files_are_in_the_exporters_format(path: Path) -> None:
    # Sorted keys and a fixed indent keep a contract's diff readable in review.
    text = path.read_text(encoding="utf-8")
    assert text == render(json.loads(text))


def test_export_never_rewrites_a_published_version(tmp_path: Path) -> None:
    """Scenario: a model changes after its version was published, and someone runs the
    exporter again without raising ``schema_version``.
    We expect: the published file is kept byte for byte and reported as ``kept``."""
    assert set(publish(tmp_path).values()) == {"written"}
    assert set(publish(tmp_path).values()) == {"unchanged"}
    target = tmp_path / "TokensPurchased.v1.json"
    target.write_text('{"title": "an older contract"}\n', encoding="utf-8")

    results = publish(tmp_path)

    assert results["TokensPurchased.v1.json"] == "kept"
    assert target.read_text(encoding="utf-8") == '{"title": "an older contract"}\n'


# --- the checker itself: it must fail on breaking changes -----------------------------


def published(name: str) -> Schema:
    return json.loads((PUBLISHED_DIR / published_file_name(name, 1)).read_text("utf-8"))


def drop_field(schema: Schema) -> None:
    del schema["properties"]["tokens"]
    schema["required"].remove("tokens")


def make_field_required(schema: Schema) -> None:
    schema["required"].append("name")


def add_required_field(schema: Schema) -> None:
    schema["properties"]["currency"] = {"type": "string"}
    schema["required"].append("currency")


def int_to_str(schema: Schema) -> None:
    schema["properties"]["deadline_ms"] = {"type": "string"}


def remove_enum_value(schema: Schema) -> None:
    schema["$defs"]["RejectReason"]["enum"].remove(3)


def drop_null_from_optional(schema: Schema) -> None:
    schema["properties"]["until_ms"] = {"type": "integer", "minimum": 0}


def tighten_max_length(schema: Schema) -> None:
    schema["properties"]["query"]["maxLength"] = 100


def drop_union_member(schema: Schema) -> None:
    # A reply can no longer carry a refund entry.
    entry = schema["properties"]["entry"]["anyOf"][0]
    entry["oneOf"] = [o for o in entry["oneOf"] if o["$ref"] != "#/$defs/TokensRefunded"]


def change_nested_field(schema: Schema) -> None:
    schema["$defs"]["AccountView"]["properties"]["balance"]["type"] = "string"


@pytest.mark.parametrize(
    ("name", "break_it", "expected"),
    [
        ("TokensPurchased", drop_field, "TokensPurchased.tokens: removed"),
        ("ClientRegistered", make_field_required, "ClientRegistered.name: now required"),
        ("TokensPurchased", add_required_field, "TokensPurchased.currency: now required"),
        ("MemeRequested", int_to_str, "MemeRequested.deadline_ms: type integer -> string"),
        ("MemeRejected", remove_enum_value, "MemeRejected.reason: enum values removed [3]"),
        ("SubscriptionRequested", drop_null_from_optional, "SubscriptionRequested.until_ms"),
        ("MemeRequested", tighten_max_length, "MemeRequested.query: maxLength tightened"),
        ("Reply", drop_union_member, "Reply.entry: title 'TokensRefunded' is no longer"),
        ("Reply", change_nested_field, "Reply.account.balance: type integer -> string"),
    ],
)
def test_checker_reports_a_breaking_change_naming_the_field(
    name: str, break_it: Any, expected: str
) -> None:
    old = published(name)
    new = copy.deepcopy(old)
    break_it(new)

    problems = incompatibilities(old, new)

    assert any(p.startswith(expected) for p in problems), problems


def test_checker_reports_a_breaking_pydantic_model() -> None:
    """Scenario: someone edits ``TokensPurchased`` as a new pydantic class: ``tokens``
    becomes a string and ``purchase_id`` disappears.
    We expect: both fields named."""

    class TokensPurchased(BaseModel):  # the broken edit, same title as the original
        event_id: str
        client_id: str
        region: str
        occurred_at_ms: int
        tokens: str
        reply_to: int

    problems = incompatibilities(published("TokensPurchased"), TokensPurchased.model_json_schema())

    assert "TokensPurchased.purchase_id: removed" in problems
    assert "TokensPurchased.tokens: type integer -> string" in problems


def add_optional_field(schema: Schema) -> None:
    schema["properties"]["note"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}


def make_field_nullable(schema: Schema) -> None:
    schema["properties"]["deadline_ms"] = {"anyOf": [{"type": "integer"}, {"type": "null"}]}


def add_enum_value(schema: Schema) -> None:
    schema["$defs"]["RejectReason"]["enum"].append(4)


def loosen_bound(schema: Schema) -> None:
    schema["properties"]["query"]["maxLength"] = 400


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("MemeRequested", add_optional_field),
        ("MemeRequested", make_field_nullable),
        ("MemeRejected", add_enum_value),
        ("MemeRequested", loosen_bound),
    ],
)
def test_checker_accepts_a_compatible_change(name: str, change: Any) -> None:
    old = published(name)
    new = copy.deepcopy(old)
    change(new)

    assert incompatibilities(old, new) == []


# --- payloads: round trip and validation ----------------------------------------------

ENVELOPE: dict[str, Any] = {
    "event_id": "e-1",
    "client_id": "c-1",
    "region": "eu",
    "occurred_at_ms": 1_700_000_000_000,
    "causation_id": "cause-1",
}
DELIVERED = MemeDelivered(
    **ENVELOPE,
    seq=4,
    balance_after=2,
    request_id="r-1",
    meme_id="m-1",
    kind="ai",
    template="drake",
    caption="top / bottom",
    image_key="img/r-1.png",
)
INPUTS: list[BaseModel] = [
    ClientRegistered(**ENVELOPE, api_key_sha256="ab" * 32, name="Acme", reply_to=0),
    TokensPurchased(**ENVELOPE, purchase_id="p-1", tokens=100, reply_to=1),
    SubscriptionRequested(**ENVELOPE, active=True, until_ms=1_800_000_000_000, reply_to=2),
    MemeRequested(
        **ENVELOPE,
        request_id="r-1",
        fingerprint="0123456789abcdef",
        lat=40.73061,
        lon=-73.935242,
        query="food",
        deadline_ms=1_700_000_005_000,
        reply_to=3,
    ),
    MemeGenerated(
        **ENVELOPE,
        request_id="r-1",
        meme_id="m-1",
        kind="standard",
        template="drake",
        caption="c",
        image_key="k",
    ),
    MemeFailed(**ENVELOPE, request_id="r-1", kind="ai", error="timeout"),
    AccountQueried(**ENVELOPE, reply_to=4),
    RequestQueried(**ENVELOPE, request_id="r-1", reply_to=5),
    ErasureRequested(**ENVELOPE, after_request_id="r-1", reply_to=6),
    ApiKeyRotationRequested(
        **ENVELOPE, api_key_sha256="cd" * 32, old_key_valid_ms=3_600_000, reply_to=7
    ),
]
ENTRIES: list[BaseModel] = [
    AccountOpened(**ENVELOPE, seq=1, balance_after=0, api_key_sha256="ab" * 32),
    TokensCredited(**ENVELOPE, seq=2, balance_after=3, purchase_id="p-1", tokens=3),
    TokensCharged(**ENVELOPE, seq=3, balance_after=2, request_id="r-1", tokens=1, kind="ai"),
    MemeRejected(**ENVELOPE, seq=5, balance_after=2, request_id="r-2", reason=RejectReason(3)),
    DELIVERED,
    TokensRefunded(
        **ENVELOPE,
        seq=6,
        balance_after=3,
        request_id="r-3",
        tokens=1,
        reason=RefundReason.DEADLINE_EXPIRED,
    ),
    SubscriptionChanged(**ENVELOPE, seq=7, balance_after=3, active=False, until_ms=None),
    PersonalDataErased(
        **ENVELOPE,
        seq=8,
        balance_after=3,
        requests_erased=2,
        first_request_id="r-1",
        last_request_id="r-3",
    ),
    ApiKeyRotated(
        **ENVELOPE,
        seq=9,
        balance_after=3,
        api_key_sha256="cd" * 32,
        replaced_keys=(ReplacedKey(api_key_sha256="ab" * 32, valid_until_ms=1_700_003_600_000),),
    ),
]
OTHERS: list[BaseModel] = [
    MemeApproved(
        **ENVELOPE,
        request_id="r-1",
        kind="standard",
        lat=-90.0,
        lon=180.0,
        query="q",
        deadline_ms=5,
    ),
    Reply(
        correlation_id="e-1",
        outcome="delivered",
        balance=2,
        entry=DELIVERED,
        reason=None,
        account=AccountView(
            client_id="c-1",
            balance=2,
            seq=4,
            memes_requested=1,
            memes_delivered=1,
            tokens_credited=3,
            tokens_charged=1,
            tokens_refunded=0,
            ai_active=True,
            ai_until_ms=None,
        ),
        request=RequestView(
            request_id="r-1", status="delivered", kind="ai", meme=DELIVERED, caption="a / b"
        ),
        caption="a / b",
        tokens_charged=1,
        erasure=ErasureView(
            requests_seen=3,
            requests_erased=1,
            image_keys=("k.png",),
            in_flight=1,
            next_after_request_id=None,
        ),
    ),
]


def test_an_entry_written_under_v1_keeps_its_bytes_and_hash() -> None:
    """Scenario: a MemeDelivered written under v1 (caption inside, no prev_hash) is read
    by today's model.
    We expect: the same JSON back, so its hash, and the chain through it, still verify."""
    written = json.dumps(
        {
            **ENVELOPE,
            "schema_version": 1,
            "seq": 4,
            "balance_after": 2,
            "type": "MemeDelivered",
            "request_id": "r-1",
            "meme_id": "m-1",
            "kind": "ai",
            "template": "drake",
            "caption": "top / bottom",
            "image_key": "img/r-1.png",
        }
    ).encode()

    entry = parse_entry(written)

    assert isinstance(entry, MemeDelivered)
    assert (entry.schema_version, entry.caption) == (1, "top / bottom")
    assert json.loads(dump(entry)) == {**json.loads(written), "prev_hash": events.GENESIS_HASH}
    assert entry_hash(entry) == entry_hash(parse_entry(dump(entry)))


# The first 16 hex digits of the sha256 of each example's JSON, as written to its topic.
BYTES_SHA256 = {
    "ClientRegistered": "b7f4ce4684db8c13",
    "TokensPurchased": "e05bc36cc20a3e8b",
    "SubscriptionRequested": "d198e0a0b37e2271",
    "MemeRequested": "d7162ff3c51b2050",
    "MemeGenerated": "a3ec533368fb2f1c",
    "MemeFailed": "278121405d99fce2",
    "AccountQueried": "574a54ba3333f705",
    "RequestQueried": "5b2c5a63a105cb2b",
    "ErasureRequested": "9d8d4c2d3b244d41",
    "AccountOpened": "d51d9ebe62492594",
    "TokensCredited": "a6bc6e92dc173201",
    "TokensCharged": "b73a6723f67ce35b",
    "MemeRejected": "eb865e7d95197546",
    "MemeDelivered": "b08c43ba254274e7",
    "TokensRefunded": "7066c971e88d41b9",
    "SubscriptionChanged": "f9029daeb19f45b1",
    "PersonalDataErased": "60c678f50c3b4d80",
    "ApiKeyRotationRequested": "0f59a7a33be3f556",
    "ApiKeyRotated": "2dd47495427aaa20",
    "MemeApproved": "63f102484b3eace1",
    "Reply": "e4765ce23da93412",
}


@pytest.mark.parametrize("model", INPUTS + ENTRIES + OTHERS, ids=lambda m: type(m).__name__)
def test_what_an_event_writes_keeps_its_bytes(model: BaseModel) -> None:
    """A ledger entry's hash (``prev_hash`` of the client's next entry) is recomputed from
    the parsed entry whenever a chain is verified (the fold, replay, ``maas audit
    verify``): if a library upgrade or a rewrite of the models (another serialiser)
    wrote one byte differently (key order, a float's digits, a default left out), every
    entry already in the ledger would stop verifying. Every event's bytes are pinned."""
    written = dump(model)

    assert hashlib.sha256(written).hexdigest()[:16] == BYTES_SHA256[type(model).__name__], written


def test_a_rotation_without_replaced_keys_keeps_the_v1_bytes() -> None:
    """A v1 ``ApiKeyRotated`` (no grace) hashes as it did before v2 added
    ``replaced_keys``: the field is written only when it holds a key."""
    v1 = ApiKeyRotated(
        **{**ENVELOPE, "schema_version": 1}, seq=9, balance_after=3, api_key_sha256="cd" * 32
    )

    written = dump(v1)

    assert b"replaced_keys" not in written
    assert hashlib.sha256(written).hexdigest()[:16] == "ba7017d3f44e638c", written
    assert parse_entry(written) == v1


def test_examples_cover_every_published_type() -> None:
    examples = {type(m).__name__ for m in INPUTS + ENTRIES + OTHERS}
    assert examples == set(current_schemas())


@pytest.mark.parametrize("event", INPUTS, ids=lambda e: type(e).__name__)
def test_input_event_round_trips_through_dump_and_parse_input(event: BaseModel) -> None:
    parsed = parse_input(dump(event))

    assert type(parsed) is type(event)
    assert parsed == event


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: type(e).__name__)
def test_ledger_entry_round_trips_through_dump_and_parse_entry(entry: BaseModel) -> None:
    parsed = parse_entry(dump(entry))

    assert type(parsed) is type(entry)
    assert parsed == entry


@pytest.mark.parametrize("model", OTHERS, ids=lambda e: type(e).__name__)
def test_work_and_reply_round_trip_through_dump(model: BaseModel) -> None:
    assert type(model).model_validate_json(dump(model)) == model


def test_entry_is_not_accepted_as_an_input() -> None:
    # The discriminator keeps the two families apart: a ledger entry is never folded
    # again as if a client had sent it.
    with pytest.raises(ValidationError):
        parse_input(dump(ENTRIES[1]))


def with_changes(model: BaseModel, **changes: Any) -> bytes:
    payload = json.loads(dump(model))
    payload.update(changes)
    return json.dumps(payload).encode()


MEME_REQUESTED = INPUTS[3]
TOKENS_PURCHASED = INPUTS[1]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (with_changes(TOKENS_PURCHASED, tokens=-1), "tokens"),
        (with_changes(TOKENS_PURCHASED, tokens=0), "tokens"),
        (with_changes(TOKENS_PURCHASED, tokens=events.MAX_PURCHASE_TOKENS + 1), "tokens"),
        (with_changes(TOKENS_PURCHASED, tokens=1.5), "tokens"),  # no float near a balance
        (with_changes(MEME_REQUESTED, lat=91), "lat"),
        (with_changes(MEME_REQUESTED, lon=-180.5), "lon"),
        (with_changes(MEME_REQUESTED, query="x" * 201), "query"),
        (with_changes(MEME_REQUESTED, query=""), "query"),
        (with_changes(MEME_REQUESTED, client_id="bad id!"), "client_id"),
        (with_changes(MEME_REQUESTED, request_id="a/b"), "request_id"),
        (with_changes(MEME_REQUESTED, event_id="x" * 129), "event_id"),
        (with_changes(MEME_REQUESTED, fingerprint="not-hex"), "fingerprint"),
    ],
)
def test_invalid_input_fails_validation_naming_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(ValidationError) as failure:
        parse_input(raw)

    errors = failure.value.errors()
    assert [error["loc"][-1] for error in errors] == [field], errors


def test_an_input_from_a_newer_writer_is_read_without_its_unknown_fields() -> None:
    """A rolling deploy: a newer API adds an optional field; this version still folds the
    input, as if the field were not there."""
    newer = with_changes(TOKENS_PURCHASED, promotion="winter-sale")

    assert parse_input(newer) == TOKENS_PURCHASED


def test_an_input_of_a_type_this_version_does_not_know_is_refused() -> None:
    """What an older reader must not ignore comes as a new type: refused (the processor
    dead-letters it), never folded as something else."""
    with pytest.raises(ValidationError, match="MemeWished"):
        parse_input(with_changes(MEME_REQUESTED, type="MemeWished"))


def test_a_ledger_entry_with_an_unknown_field_is_refused() -> None:
    """Entries stay strict: their hash covers every field, so dropping one would make the
    chain unverifiable; a reader too old for an entry must say so."""
    with pytest.raises(ValidationError) as failure:
        parse_entry(with_changes(ENTRIES[2], surprise=1))

    assert [error["loc"][-1] for error in failure.value.errors()] == ["surprise"]


def test_ledger_entry_with_negative_balance_fails_validation_naming_the_field() -> None:
    with pytest.raises(ValidationError) as failure:
        parse_entry(with_changes(ENTRIES[2], balance_after=-1))

    assert [error["loc"][-1] for error in failure.value.errors()] == ["balance_after"]
