"""PUT /v1/customers/{user_id}: a CRM or integration sets a customer's attributes.

Body: one flat record (``decisions.runtime.customer_records``): ``tier``, ``country``,
``signup_date``, ``segments`` and custom attributes (``lifetime_value`` …). It replaces
the customer's attributes; consent is kept. 201 when the customer is new, else 200; the
body is the stored record with its consent. Needs the ``customers:write`` scope.

The worker's cached copy (``d:cust:{uid}``) is overwritten with the new attributes at once,
so the user's next event is decided with them; were Redis down, the worker still notices
the changed row within its reload interval.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import authenticate
from api.responses import json_response
from api.routes.events import check_rate, parse_json, read_body
from api.routes.reads import user_id_of
from api.state import get_api
from decisions.core.errors import ServiceUnavailable, ValidationError
from decisions.runtime.customer_records import CustomerRecord, parse_record, upsert
from decisions.runtime.customers import load_customers

MAX_BODY = 16_384


def store(engine: Engine, record: CustomerRecord) -> tuple[bool, dict[str, Any]]:
    """Blocking: write the record; ``(created, the attributes decisions now read)``."""
    created, _ = upsert(engine, [record])
    return created == 1, load_customers(engine, [record.user_id])[record.user_id]


async def put_customer(request: Request) -> Response:
    api = get_api(request)
    user_id = user_id_of(request)
    key = await authenticate(api, request, "customers:write")
    await check_rate(api, key.prefix)
    data = parse_json(await read_body(request, MAX_BODY))
    record, errors = parse_record(data, user_id=user_id)
    if record is None:
        raise ValidationError("invalid customer", errors)
    created, attrs = await api.db(store, api.engine, record)
    try:
        await api.call_redis(api.redis.cache_customer(user_id, orjson.dumps(attrs)))
    except ServiceUnavailable:
        pass  # stored; the worker re-reads changed customers every reload interval
    body = {**record.to_dict(), "consent": attrs.get("consent", True)}
    return json_response(request, body, status=201 if created else 200)


routes = [Route("/v1/customers/{user_id}", put_customer, methods=["PUT"])]
