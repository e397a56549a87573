"""Every Python dependency is installed at a locked version (``constraints.txt``).

A package added to ``pyproject.toml`` without ``scripts/lock-dependencies.sh`` would be
installed at whatever release is newest on the day: a fresh clone, CI and the image
could each run a different one.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def test_every_dependency_has_a_locked_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    wanted = set()
    for requirement in requirements:
        match = REQUIREMENT_NAME.match(requirement)
        assert match, requirement
        wanted.add(normalized(match.group()))

    locked = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not name==version"
            locked[normalized(name)] = version

    assert not wanted - set(locked), "run scripts/lock-dependencies.sh"
