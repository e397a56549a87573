"""The local broker's class-data archive: the JVM maps the classes an earlier broker
loaded from one file, instead of reading and verifying them from the jars again.

Measured here (2 cores): a broker ready in 2.7-3.0 s instead of 3.4-3.9 s, with 2.9-3.1 s
of CPU instead of 3.9-4.9 s, at every start (``maas up``, the suite's brokers, each node
restart of a fault run).

A broker started while there is no archive writes one as it exits cleanly
(``-XX:ArchiveClassesAtExit``, into its own home). ``adopt`` moves that into the user's
cache (``$XDG_CACHE_HOME/maas``, else ``~/.cache/maas``), named for the JVM and the
classpath, where every later broker of every clone finds it. It is adopted only if a JVM
maps it: a truncated archive crashed the JVM with SIGBUS here, while one from another
JVM build is ignored with a warning. An archive damaged after that (a half-copied cache)
would crash every start: a broker or format tool that dies at start-up while it maps
one has it ``discard``-ed and starts again without.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

DUMP_NAME = "classes.jsa"  # in the broker's home, written by the JVM as it exits
CHECK_TIMEOUT_S = 60


def archive_path(java: str, classpath: str, flags: list[str]) -> Path:
    """The cached archive for this JVM build, classpath and flags (each must match)."""
    binary = Path(java).resolve()
    stat = binary.stat()
    key = "\0".join([str(binary), str(stat.st_mtime_ns), str(stat.st_size), classpath, *flags])
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "maas" / f"kafka-classes-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsa"


def start_flags(java: str, classpath: str, flags: list[str], home: Path) -> list[str]:
    """Map the cached archive, or write one at exit for ``adopt`` to keep."""
    archive = archive_path(java, classpath, flags)
    if archive.is_file():
        return [f"-XX:SharedArchiveFile={archive}"]
    # Quiet: the dump lists every class it skips, ~300 lines of the JVM's own output.
    return [f"-XX:ArchiveClassesAtExit={home / DUMP_NAME}", "-Xlog:cds*=off"]


def adopt(java: str, classpath: str, flags: list[str], home: Path) -> None:
    """After a clean exit: keep the archive the broker wrote, if none is cached yet and a
    JVM maps it. The dump is removed either way."""
    dump = home / DUMP_NAME
    if not dump.is_file():
        return
    try:
        archive = archive_path(java, classpath, flags)
        if archive.is_file() or not _maps(java, classpath, flags, dump):
            return
        archive.parent.mkdir(parents=True, exist_ok=True)
        # Copied, then renamed: a broker starting meanwhile never maps half a file.
        partial = archive.with_name(f"{archive.name}.{os.getpid()}.partial")
        shutil.copyfile(dump, partial)
        os.replace(partial, archive)
    except OSError:
        return  # an unwritable cache costs only the slower starts
    finally:
        dump.unlink(missing_ok=True)


def discard(java: str, classpath: str, flags: list[str]) -> bool:
    """Remove the cached archive (a JVM that mapped it did not start); True if there was
    one. The next clean exit writes a new one."""
    archive = archive_path(java, classpath, flags)
    try:
        archive.unlink()
    except FileNotFoundError:
        return False
    return True


def _maps(java: str, classpath: str, flags: list[str], archive: Path) -> bool:
    """A JVM that must share (``-Xshare:on``) starts with it and exits 0. Run in the
    archive's folder: a JVM that crashes writes its report (hs_err_pid*.log) there."""
    cmd = [java, *flags, "-Xshare:on", f"-XX:SharedArchiveFile={archive}", "-cp", classpath]
    try:
        done = subprocess.run(
            [*cmd, "-version"],
            capture_output=True,
            timeout=CHECK_TIMEOUT_S,
            check=False,
            cwd=archive.parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
