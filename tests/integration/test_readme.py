"""The README's "Try it" examples, run as written against a fresh region.

A newcomer succeeds from the README alone only while its examples are true. Each curl
command of the section's first example block is parsed (the flags it may use: ``-s``,
``-X``, ``-H``, ``-d``, ``-o``) and sent with httpx, its placeholders filled from the
answers before it (``CLIENT_ID``, ``API_KEY``, ``REQUEST_ID``, the image's
``<sha256>``). Every call must succeed, and an answer the README shows below a command
(``# {...}``) must have each field it names, with each value it spells out (``…``
and ``<...>`` stand for what changes from run to run).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.stack import Stack

pytestmark = pytest.mark.kafka

README = Path(__file__).resolve().parents[2] / "README.md"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHOWN_FIELD = re.compile(r'"(\w+)":("(?:[^"\\]|\\.)*"|-?\d+|true|false|null)')


@dataclass
class Command:
    line: str  # as the README writes it, continuation lines joined
    shown: str = ""  # the answer the README shows below it, if any


@dataclass
class Call:
    method: str = "GET"
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    out: str | None = None


def try_it_commands(readme: str) -> list[Command]:
    section = readme.split("\n## Try it\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = block.splitlines()
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        text = lines[i]
        i += 1
        if text.startswith("curl "):
            while text.endswith("\\"):
                text = text[:-1].rstrip() + " " + lines[i].strip()
                i += 1
            commands.append(Command(text))
        elif commands and text.startswith(("# {", '#  "')):
            commands[-1].shown += text[2:]
    return commands


def parse_curl(words: list[str]) -> Call:
    assert words[0] == "curl", words
    call = Call()
    rest = iter(words[1:])
    for word in rest:
        if word == "-s":
            continue
        if word == "-X":
            call.method = next(rest)
        elif word == "-H":
            name, value = next(rest).split(": ", 1)
            call.headers[name] = value
        elif word == "-d":
            call.body = next(rest)
            call.method = call.method if call.method != "GET" else "POST"
        elif word == "-o":
            call.out = next(rest)
        else:
            assert not word.startswith("-"), f"a curl flag this test does not read: {word}"
            call.url = word
    return call


def check_shown(shown: str, answer: dict[str, Any]) -> None:
    pairs = SHOWN_FIELD.findall(shown)
    assert pairs, f"no field read in the answer the README shows: {shown}"
    for name, literal in pairs:
        assert name in answer, (name, answer)
        value = json.loads(literal)
        if isinstance(value, str) and ("…" in value or "<" in value):
            continue  # a placeholder
        assert answer[name] == value, (name, answer[name], shown)


def test_the_try_it_commands_work_as_written(stack: Stack, tmp_path: Path) -> None:
    commands = try_it_commands(README.read_text(encoding="utf-8"))
    assert len(commands) >= 10, commands
    host = stack.base_url.removeprefix("http://")
    known = {
        "localhost:8000": host,
        "dev-billing-token": stack.billing_token,
        "dev-auditor-token": stack.auditor_token,
    }
    for command in commands:
        words = shlex.split(command.line)
        for placeholder in ("CLIENT_ID", "API_KEY", "REQUEST_ID", "<sha256>"):
            if any(placeholder in word for word in words):
                assert placeholder in known, f"{placeholder} before an answer gave it: {command}"
        for old, new in known.items():
            words = [word.replace(old, new) for word in words]
        call = parse_curl(words)
        if "personal-data" in call.url:
            # Read at a person's pace: the meme's delivery is in the ledger by then.
            stack.settled(known["API_KEY"], known["REQUEST_ID"])

        response = stack.http.request(
            call.method,
            "http://" + call.url.removeprefix("http://"),
            headers=call.headers,
            content=call.body,
        )

        assert response.is_success, (command.line, response.status_code, response.text)
        if call.out is not None:
            assert response.content.startswith(PNG_MAGIC), command.line
            (tmp_path / call.out).write_bytes(response.content)
            continue
        answer = response.json()
        if command.shown:
            check_shown(command.shown, answer)
        learn(known, answer)


def test_the_python_example_runs_as_written(stack: Stack) -> None:
    """The ``maas_client`` example of the same section, run with this region's address
    and billing token; its own asserts check the retry was not charged."""
    section = README.read_text(encoding="utf-8").split("\n## Try it\n", 1)[1]
    source = section.split("```python\n", 1)[1].split("```", 1)[0]
    source = source.replace("http://localhost:8000", stack.base_url)
    source = source.replace('"dev-billing-token"', repr(stack.billing_token))
    printed = io.StringIO()

    with contextlib.redirect_stdout(printed):
        exec(compile(source, "README.md (python example)", "exec"), {})

    assert printed.getvalue() == "['lat']\n"


def learn(known: dict[str, str], answer: dict[str, Any]) -> None:
    """The placeholders an answer fills: a registration's (or a new key's) client and
    key, a meme's request and image."""
    if "api_key" in answer:
        known["CLIENT_ID"], known["API_KEY"] = answer["client_id"], answer["api_key"]
    if "image_url" in answer:
        known["REQUEST_ID"] = answer["request_id"]
        known["<sha256>"] = answer["image_url"].rsplit("/", 1)[1].removesuffix(".png")


def test_the_reader_finds_every_command_and_answer() -> None:
    """So that a README edit the reader misreads fails here, not silently."""
    commands = try_it_commands(
        "x\n## Try it\n```bash\n# prose\ncurl -s -X POST a \\\n     -d '{}'\n"
        '# {"a":1,\n#  "b":"…"}\ncurl -s b\n```\n'
    )
    assert [(c.line, c.shown) for c in commands] == [
        ("curl -s -X POST a -d '{}'", '{"a":1, "b":"…"}'),
        ("curl -s b", ""),
    ]
    call = parse_curl(shlex.split(commands[0].line))
    assert (call.method, call.url, call.body) == ("POST", "a", "{}")
    with pytest.raises(AssertionError):
        check_shown('{"a":2}', {"a": 1})
    check_shown('{"a":1,"b":"x…"}', {"a": 1, "b": "y"})
