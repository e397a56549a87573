"""Argument types shared by the sub-commands: a bad value is an argparse error naming
its flag (``argument --port: ...``), before anything starts."""

from __future__ import annotations

import argparse
from pathlib import Path


def positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def tcp_port(text: str) -> int:
    value = _integer(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1-65535, not {value}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def new_file(text: str) -> Path:
    """A file to write: its folder must exist (the file is replaced if it does)."""
    path = Path(text)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {path.parent}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"a folder, not a file: {text}")
    return path


def folder(text: str) -> Path:
    """A folder to write into: made if missing, refused if a file has its name."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"a file, not a folder: {text}")
    return path
