"""The one scheme for deterministic ids: ``uuid5(NAMESPACE_URL, "maas:" + name)``, as hex.

An id derived this way names the same thing in every process and on every replay: a
client's retry (same ``Idempotency-Key``) names the same request, a generator that
renders a request twice writes the same outcome id, and the ledger's outputs get the
same ids live and in replay. Changing the scheme would rename every past request, so
the names below are part of the contract.
"""

from __future__ import annotations

import uuid


def stable_id(name: str) -> str:
    """The id of ``name``: always the same, 32 hex characters whatever its length."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "maas:" + name).hex


def derived_id(*parts: object) -> str:
    """A deterministic id for an output, from the ids of what caused it."""
    return stable_id("/".join(map(str, parts)))
