"""The content policy at the API edge: a query is screened before anything is charged.

``ScreenedQuery`` is the ``query`` parameter of ``GET /memes`` with the policy applied:
a route that takes it never sees a blocked query, and since the route appends the
``MemeRequested`` event only after its dependencies succeed, a refused query costs the
client nothing and leaves no trace in the ledger. The answer is a 422::

    {"error": "content_policy", "field": "query", "reason": "offensive_language: ..."}

``reason`` starts with a stable code (``offensive_language`` or ``self_harm``) before
the colon; docs/content-policy.md lists them. Scoring takes well under a millisecond
once the model is loaded; call ``warm_up`` at start-up so the first request does not
pay the ~4 s load. It runs on the event loop, as every dependency of the API does:
verdicts are cached per text and a new one costs less than the thread-pool hop FastAPI
makes for a sync dependency (docs/capacity.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from pydantic import AfterValidator

from api.deps import AppSettings
from api.errors import ApiError
from api.params import TYPED_TEXT_PATTERN, typed_text
from memes import policy
from schemas.events import MAX_QUERY_CHARS

warm_up = policy.warm_up


class ContentPolicyViolation(ApiError):
    """422: the text breaks the content policy; nothing was charged."""

    status_code = 422
    error = "content_policy"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(None, field=field, reason=reason)


async def screened_query(
    settings: AppSettings,
    query: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_QUERY_CHARS,
            description="What the meme is about",
            json_schema_extra={"pattern": TYPED_TEXT_PATTERN},
        ),
        AfterValidator(typed_text),
    ],
) -> str:
    """The query, if the content policy allows it; else ``ContentPolicyViolation``."""
    verdict = policy.screen(query, "query", settings.policy_query_threshold)
    if not verdict.allowed:
        raise ContentPolicyViolation("query", verdict.reason)
    return query


ScreenedQuery = Annotated[str, Depends(screened_query)]
