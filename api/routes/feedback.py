"""POST /v1/offers/{offer_id}/impression and /redeem: idempotent feedback per offer.

Body: ``{"user_id": "u-42", "amount": 120.0}`` (``amount``, the order value, on redeem
only, optional). The offer is found in the user's Redis offers, else among the stored
decisions; its rule and ruleset are stored with the feedback so the admin can report
which rules convert. Reporting the same offer and kind twice stores one row.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import authenticate
from api.responses import json_response
from api.routes.events import check_rate, parse_json, read_body
from api.state import ApiState, get_api
from decisions.core.errors import FieldError, NotFound, ServiceUnavailable, ValidationError
from decisions.core.events import MAX_NUMBER, NUMBER, check_id
from decisions.core.models import Decision, OfferFeedback

KINDS = ("impression", "redeem")
MAX_BODY = 4096


def parse_feedback(kind: str, data: Any) -> tuple[str, float | None]:
    errors: list[FieldError] = []
    if not isinstance(data, dict):
        raise ValidationError("invalid feedback", [FieldError("body", "expected a JSON object")])
    allowed = {"user_id", "amount"} if kind == "redeem" else {"user_id"}
    for name in data:
        if name not in allowed:
            errors.append(FieldError(name, "unknown field"))
    user_id = data.get("user_id")
    if (problem := check_id(user_id)) is not None:
        errors.append(FieldError("user_id", problem))
    amount = data.get("amount")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, NUMBER)
                               or not 0 <= amount <= MAX_NUMBER):
        errors.append(FieldError("amount", f"expected a number from 0 to {MAX_NUMBER}"))
    if errors:
        raise ValidationError("invalid feedback", errors)
    return str(user_id), (float(amount) if amount is not None else None)


def record(engine: Engine, offer_id: str, kind: str, user_id: str, amount: float | None,
           offer: dict[str, Any] | None) -> tuple[bool, dict[str, Any]]:
    """Blocking: store the feedback once; ``(created, offer facts)``."""
    with engine.begin() as conn:
        if offer is None:
            row = conn.execute(
                select(Decision.rule, Decision.ruleset, Decision.user_id)
                .where(Decision.action_id == offer_id)
            ).first()
            if row is None or row.user_id != user_id:
                raise NotFound(f"no offer {offer_id!r} for user {user_id!r}")
            offer = {"rule": row.rule, "ruleset": row.ruleset}
        created = conn.execute(
            insert(OfferFeedback)
            .values(offer_id=offer_id, user_id=user_id, kind=kind, rule=offer.get("rule"),
                    ruleset=offer.get("ruleset"), amount=amount)
            .on_conflict_do_nothing(constraint="uq_offer_feedback_offer_kind")
            .returning(OfferFeedback.id)
        ).first()
    return created is not None, offer


async def _offer_from_redis(api: ApiState, user_id: str, offer_id: str) -> dict[str, Any] | None:
    try:
        raw = await api.call_redis(api.redis.offer(user_id, offer_id))
    except ServiceUnavailable:
        return None  # PostgreSQL's decisions table is asked instead
    if raw is None:
        return None
    data = orjson.loads(raw)
    return data if isinstance(data, dict) else None


async def post_impression(request: Request) -> Response:
    return await post_feedback(request, "impression")


async def post_redeem(request: Request) -> Response:
    return await post_feedback(request, "redeem")


async def post_feedback(request: Request, kind: str) -> Response:
    api = get_api(request)
    offer_id: str = request.path_params["offer_id"]
    key = await authenticate(api, request, "events:write")
    await check_rate(api, key.prefix)
    if len(offer_id) > 64:
        raise NotFound(f"no offer {offer_id!r}")
    user_id, amount = parse_feedback(kind, parse_json(await read_body(request, MAX_BODY)))
    offer = await _offer_from_redis(api, user_id, offer_id)
    created, facts = await api.db(record, api.engine, offer_id, kind, user_id, amount, offer)
    body = {"offer_id": offer_id, "kind": kind, "user_id": user_id, "rule": facts.get("rule"),
            "ruleset": facts.get("ruleset"), "duplicate": not created}
    return json_response(request, body, status=201 if created else 200)


routes = [
    Route("/v1/offers/{offer_id}/impression", post_impression, methods=["POST"]),
    Route("/v1/offers/{offer_id}/redeem", post_redeem, methods=["POST"]),
]
