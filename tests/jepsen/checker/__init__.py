"""An independent checker of a fault run: the history the clients recorded against the log.

``check(history, bootstrap, region)`` reads ``<region>.ledger``, ``<region>.requests``,
``<region>.purchases``, ``<region>.outcomes``, ``<region>.ledger-state-changelog`` (and,
if it exists, ``<region>.ledger-checkpoints``) from offset 0 to their end, committed
records only, and checks the history (``tests.jepsen.history``) against them. It reads
once the ledger's group (``<region>.ledger``) has committed its input topics to their
ends (at most 30 s): the ledger settles a meme up to half a second after its client had
it. Run it once the service is idle and every request is past its deadline plus the
refund grace, or open requests and a cut between topics are reported as problems.

``check_records(history, records, region)`` is the same check over records already in
memory: the unit tests feed it synthetic topic contents.

The package's modules; imports point one way (each imports only modules listed above it):

- ``model``: the topics, a record, hashes and ids, the problems and the verdict;
- ``log``: the records parsed; ``fold``: our own fold of the ledger topic;
- ``ops``: the history indexed by logical operation; ``context``: what the checks read;
- ``checks`` (checks 1, 2, 3, 6 and 8), ``accounts`` (4 and 5), ``replay`` (7);
- ``verdict``: ``check_records``; ``kafka``: ``read_records``; ``cli``: ``check``, ``main``
  (``python -m tests.jepsen.checker --history H --bootstrap B --region R``).

Independence: this package imports nothing of the service (only the standard library,
``confluent_kafka``, its own modules and its sibling ``history``). What it knows of the
wire, it learnt by reading the service's code, and re-implements here:

- topic names ``<region>.ledger|requests|purchases|outcomes|ledger-state-changelog|
  ledger-checkpoints`` (core/topics.py); every record is JSON, key = client id;
- a ledger entry (schemas/events.py) carries ``type``, ``client_id``, ``seq`` (1, 2, ...
  per client), ``balance_after`` and ``prev_hash``; the first entry of a client is
  ``AccountOpened`` (seq 1, balance 0, prev_hash 64 zeros). ``TokensCredited`` (+tokens,
  ``purchase_id``), ``TokensCharged`` (-tokens, ``request_id``, ``kind``),
  ``MemeRejected`` (``request_id``, ``reason`` 1 unknown client, 2 idempotency conflict,
  3 insufficient tokens), ``MemeDelivered`` (``request_id``, ``meme_id``), ``TokensRefunded``
  (+tokens, ``request_id``, ``reason`` 1 generator failed, 2 deadline expired),
  ``SubscriptionChanged`` (``active``, ``until_ms``), ``PersonalDataErased`` (no change)
  and ``ApiKeyRotated`` (the account's ``api_key_sha256`` from then on, and in
  ``replaced_keys`` each replaced key that still works with its ``valid_until_ms``);
  a request is charged ``ai`` when the client's subscription is active at the
  ``MemeRequested``'s time, else ``standard`` (ledger/request_rules.py); a blocked AI
  caption is delivered as the standard meme (``MemeDelivered.kind`` ``standard``);
- an entry's hash is the sha256 of its JSON, and the processor writes exactly that JSON
  as the record value (schemas ``entry_hash`` and ``dump``; processors/ledger/outputs.py),
  so the hash is sha256 of the record's bytes; the next entry's ``prev_hash`` is it;
- a partition's chain head (ledger/audit.py ``_roll``) is
  ``sha256(head_hex + entry_hash_hex)`` over its entries in offset order from 64 zeros;
  a checkpoint record is ``{"topic","partition","offset","head","signature"}`` (its HMAC
  needs the signing key, a secret this checker does not hold: only heads are checked);
- the changelog (ledger/state.py) is keyed ``a/<client>`` (the account: balance, seq,
  counters, subscription, ``last_hash``), ``r/<client>/<request>`` (the request record:
  status, kind, tokens, fingerprint, deadline_ms, waiters, reasons, meme),
  ``q/<client>/<request>`` (pending index, value = deadline_ms, deleted when the request
  ends), ``d/<deadline_ms, 16 digits>/<client>/<request>`` (ended index, empty value,
  written when the request ends; it and the record are deleted a retention of at least
  a day after the deadline, longer than any run) and ``p/<client>/<purchase>`` (the
  credit); a null value deletes;
- ``MemeRequested`` (requests topic) carries ``request_id``, ``fingerprint``, ``query``,
  ``deadline_ms`` and ``occurred_at_ms`` (the API's wall clock); ``ClientRegistered`` and
  ``TokensPurchased`` (purchases topic) carry ``api_key_sha256`` and ``purchase_id``/``tokens``;
  ``MemeGenerated`` (outcomes topic, from a generator) carries ``request_id``, ``meme_id``
  and ``occurred_at_ms``; the ledger delivers it if that time is by the request's
  deadline and the request is still open when folded;
- the ledger processors are one consumer group, ``<region>.ledger``, over the requests,
  purchases and outcomes topics (processors/ledger/processor.py ``group_id``); its
  committed offset of a partition is past every input it has decided;
- a 200 for a meme comes from its generator once that ``MemeGenerated`` is in the
  outcomes topic (made by the deadline), or from the ledger's delivery; if the ledger
  refunded that request first (its deadline timer, or a second generator's failure),
  the client got a free meme: accepted, and counted as ``free_memes``;
- with an ``Idempotency-Key`` the request id is ``uuid5(NAMESPACE_URL, "maas:" + client_id
  + ":" + key).hex`` (core/ids.py, api/routes/memes.py), else random; answers carry it
  in ``request_id`` except 402, whose body has only ``balance``;
- HTTP answers (api/routes, api/errors.py): /memes 200 ``{request_id, meme_id, kind,
  tokens_charged, ...}``; 402 ``insufficient_tokens``; 409 ``conflict`` (same key, other
  parameters) or ``request_in_progress``; 502 ``generation_failed`` (refunded); 504
  ``deadline_exceeded`` (after the append: with ``refunded: true`` when the ledger
  refunded on the deadline); 503 (maybe not appended); 401 with the detail "the ledger
  does not know this client" means the ledger did not know the client (nothing stored),
  any other 401 was refused before the append (an unknown key: one rotated away). POST
  /v1/clients 201 (202 ``pending``: appended, not confirmed) ``{client_id, api_key}``,
  409 ``already_registered`` ``{client_id}`` (an account opened under the same
  Idempotency-Key); POST /v1/clients/{id}/api-key 201 ``{client_id, api_key}`` once its
  ``ApiKeyRotationRequested`` (purchases topic, ``api_key_sha256``, ``old_key_valid_ms``)
  is decided into an ``ApiKeyRotated`` of that hash: with a grace, the replaced key works
  until the request's ``occurred_at_ms`` plus it (or a later end it already had), keys
  replaced before until their own end, never the new key, at most the four that end last;
  without a grace none does; purchases 201 new / 200 repeat ``{purchase_id,
  tokens, balance_after, seq}`` of the credit entry, 409 other amount; /v1/me the account
  view at ``seq``; /v1/requests/{id} the request record's view.
"""

from tests.jepsen.checker.cli import check, main
from tests.jepsen.checker.kafka import read_records
from tests.jepsen.checker.model import (
    GENESIS_HASH,
    MAX_PROBLEM_LINES,
    Record,
    Topics,
    Verdict,
    entry_hash,
    roll,
    stable_request_id,
    topics_of,
)
from tests.jepsen.checker.verdict import check_records

__all__ = [
    "GENESIS_HASH",
    "MAX_PROBLEM_LINES",
    "Record",
    "Topics",
    "Verdict",
    "check",
    "check_records",
    "entry_hash",
    "main",
    "read_records",
    "roll",
    "stable_request_id",
    "topics_of",
]
