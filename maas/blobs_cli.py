"""``maas blobs sweep``: delete the meme images whose retention has ended.

An image is kept ``MAAS_IMAGE_RETENTION_HOURS`` (168) after it was last made; a standard
meme made again under the same key renews it (``core/blobstore.py``). One sweep, or with
``--loop`` one every ``MAAS_IMAGE_SWEEP_INTERVAL_S`` (3600) until stopped: ``maas up``
runs it so. With a retention of 0 images are kept until erased and the loop only waits.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

from core import logs
from core.blobstore import BlobStore, make_blob_store
from core.readiness import mark_ready
from core.settings import Settings

log = logging.getLogger("maas.blobs")


def register(sub: argparse._SubParsersAction) -> None:
    blobs = sub.add_parser("blobs", help="the meme images' store")
    commands = blobs.add_subparsers(dest="blobs_command", required=True)
    sweep = commands.add_parser(
        "sweep", help="delete the images not made within MAAS_IMAGE_RETENTION_HOURS"
    )
    sweep.add_argument(
        "--loop", action="store_true", help="sweep every MAAS_IMAGE_SWEEP_INTERVAL_S until stopped"
    )
    sweep.set_defaults(func=_sweep)


def _sweep(args: argparse.Namespace) -> int:
    logs.configure("blobs")
    settings = Settings.from_env()
    store = make_blob_store(settings)
    retention_s = settings.image_retention_hours * 3600
    if not args.loop:
        sweep_once(store, retention_s)
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    interval_s = settings.image_sweep_interval_s
    log.info(
        "image sweeps every interval_s=%d retention_hours=%d",
        interval_s,
        settings.image_retention_hours,
    )
    # Two sweepers at once (a rolling restart's overlap) are safe: a blob goes once.
    mark_ready(settings.ready_file)
    while not stop.is_set():
        try:
            sweep_once(store, retention_s)
        except OSError as exc:  # the store unreachable (S3 too): the next round tries again
            log.error("image sweep failed error=%s", exc)
        stop.wait(interval_s)
    return 0


def sweep_once(store: BlobStore, retention_s: int) -> int:
    """Delete what was last made more than ``retention_s`` ago (nothing if 0)."""
    if retention_s == 0:
        log.info("image sweep skipped: images are kept until erased (retention 0)")
        return 0
    started = time.monotonic()
    made_before = time.time() - retention_s
    log.info(
        "image sweep started made_before=%s",
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(made_before)),
    )
    swept = store.sweep(made_before)
    log.info("image sweep deleted=%d seconds=%.2f", swept, time.monotonic() - started)
    return swept
