"""A typed Python client for MaaS Ledger's client and billing scopes, on httpx.

::

    from maas_client import BillingClient, MemesClient

    with BillingClient("http://localhost:8000", "dev-billing-token") as billing:
        client = billing.register("demo")
        billing.purchase(client.client_id, tokens=10, purchase_id="order-1")
    with MemesClient("http://localhost:8000", client.api_key) as memes:
        meme = memes.meme(40.730610, -73.935242, "food", idempotency_key="my-first-meme")

Imports only httpx and the standard library, never the service's own packages, so it
can be installed and used on its own.
"""

from maas_client.client import BillingClient, MemesClient, new_idempotency_key
from maas_client.errors import (
    AlreadyRegistered,
    BadRequest,
    Conflict,
    DeadlineExceeded,
    FieldError,
    GenerationFailed,
    InsufficientTokens,
    InvalidRequest,
    MaasError,
    NotFound,
    RequestInProgress,
    ServerError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from maas_client.models import (
    Account,
    Credited,
    Meme,
    RegisteredClient,
    RequestStatus,
    RotatedKey,
    Subscription,
)
from maas_client.retry import RetryPolicy

__all__ = [
    "Account",
    "AlreadyRegistered",
    "BadRequest",
    "BillingClient",
    "Conflict",
    "Credited",
    "DeadlineExceeded",
    "FieldError",
    "GenerationFailed",
    "InsufficientTokens",
    "InvalidRequest",
    "MaasError",
    "Meme",
    "MemesClient",
    "NotFound",
    "RegisteredClient",
    "RequestInProgress",
    "RequestStatus",
    "RetryPolicy",
    "RotatedKey",
    "ServerError",
    "Subscription",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "new_idempotency_key",
]
