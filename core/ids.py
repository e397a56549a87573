"""The one scheme for deterministic ids: ``uuid5(NAMESPACE_URL, "maas:" + name)``, as hex.

An id derived this way names the same thing in every process and on every replay: a
client's retry (same ``Idempotency-Key``) names the same request, a generator that
renders a request twice writes the same outcome id, and the ledger's outputs get the
same ids live and in replay. Changing the scheme would rename every past request, so
the names below are part of the contract.
"""

from __future__ import annotations

import hashlib
import uuid

_PREFIX = uuid.NAMESPACE_URL.bytes + b"maas:"


def stable_id(name: str) -> str:
    """The id of ``name``: always the same, 32 hex characters whatever its length.

    Equal to ``uuid.uuid5(uuid.NAMESPACE_URL, "maas:" + name).hex``, computed without
    the ``UUID`` object: the fold derives two ids per decision, and that object was a
    fifth of the fold's time.
    """
    digest = bytearray(hashlib.sha1(_PREFIX + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


def derived_id(*parts: object) -> str:
    """A deterministic id for an output, from the ids of what caused it."""
    return stable_id("/".join(map(str, parts)))
