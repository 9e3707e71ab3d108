"""The OpenAPI 3 document served at /openapi.json (checked against the app by schemathesis)."""

from __future__ import annotations

from typing import Any

from decisions.core.events import EVENT_TYPES, ID_PATTERN, MAX_NUMBER, PROPERTIES, id_pattern
from decisions.core.settings import Settings
from decisions.runtime.customer_records import RESERVED

NO_NUL = "^[^\\u0000]*$"
ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {"application/json": {"schema": ERROR}}}
    if retry_after:
        out["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                          "description": "seconds to wait"}}
    return out


def _ok(description: str, ref: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


AUTH_ERRORS = {
    "401": _error("missing, malformed, unknown or revoked API key"),
    "403": _error("the API key lacks the scope this operation needs"),
}
RATE = {"429": _error("rate limit of this API key exceeded", retry_after=True)}
UNAVAILABLE = {"503": _error("a dependency this write needs is unavailable", retry_after=True)}
USER_ID = {"name": "user_id", "in": "path", "required": True,
           "schema": {"type": "string", "minLength": 1, "maxLength": 200,
                      "pattern": id_pattern("/")}}
IF_NONE_MATCH = {"name": "If-None-Match", "in": "header", "required": False,
                 "schema": {"type": "string"},
                 "description": "an ETag from an earlier response; 304 when unchanged"}
CACHE_HEADERS = {
    "ETag": {"schema": {"type": "string"}},
    "Cache-Control": {"schema": {"type": "string"}, "description": "private, max-age=N"},
}
READ_ERRORS = {"304": {"description": "not modified (If-None-Match matched)",
                       "headers": CACHE_HEADERS},
               "400": _error("invalid user id or query parameter"), **AUTH_ERRORS, **RATE}


def _schemas(settings: Settings) -> dict[str, Any]:
    return {
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "details": {"type": "array", "items": {
                        "type": "object", "required": ["field", "message"],
                        "properties": {"field": {"type": "string"},
                                       "message": {"type": "string"},
                                       "line": {"type": "integer"}}}},
                }}},
        },
        "Offer": {
            "type": "object", "required": ["offer_id", "rule", "kind", "expires_at"],
            "description": "A rule's offer (every field below); default offers of "
                           "DECISIONS_API_FALLBACK_FILE are served as that file has them.",
            "properties": {
                "offer_id": {"type": "string", "description": "deterministic: the same "
                             "event, ruleset and rule always give the same id"},
                "rule": {"type": "string"},
                "ruleset": {"type": "string"}, "ruleset_version": {"type": "integer"},
                "kind": {"type": "string", "enum": ["discount", "free_shipping"],
                         "description": "what the offer gives; its terms are under the "
                                        "field of the same name"},
                "discount": {"type": "object", "required": ["type", "value"], "properties": {
                    "type": {"type": "string", "enum": ["percent", "amount"]},
                    "value": {"type": "number", "description": "percent off, or an amount "
                              "off in the shop's currency"},
                    "code": {"type": "string"},
                    "min_basket": {"type": "number"}}},
                "free_shipping": {"type": "object", "properties": {
                    "code": {"type": "string"}, "min_basket": {"type": "number"}},
                    "description": "free shipping (kind free_shipping)"},
                "max_per_user_ever": {"type": "integer", "minimum": 1,
                                      "description": "most offers of this rule per shopper, "
                                                     "ever"},
                "products": {"type": "array", "items": {"type": "string"},
                             "description": "product ids the discount applies to (absent: "
                                            "the whole basket)"},
                "priority": {"type": "integer"}, "stackable": {"type": "boolean"},
                "expires_at": {"type": "string", "format": "date-time"},
                "created_at": {"type": "string", "format": "date-time",
                               "description": "event time of the event that made the offer"},
                "event_id": {"type": "string", "description": "the event that made it"},
                "per_user_cap": {"type": "integer", "minimum": 0,
                                 "description": "most offers of this rule per shopper in 30 "
                                                "days (0: no such cap)"},
                "reason": {"type": "string", "description": "why the rule fired: the rule and "
                           "the values its conditions read, e.g. "
                           "\"rule high-value-cart: cart_value=250.0\""},
                "trace_id": {"type": "string", "pattern": "^[0-9a-f]{32}$",
                             "description": "only with tracing on, when the event that made "
                             "the offer was sampled: the OpenTelemetry trace (W3C trace id) "
                             "from POST /v1/events to this decision, to look up in Jaeger"},
            },
        },
        "Product": {
            "type": "object", "required": ["id", "name", "price", "image_url", "category"],
            "properties": {
                "id": {"type": "string"}, "name": {"type": "string"},
                "price": {"type": "number"},
                "image_url": {"type": ["string", "null"]},
                "category": {"type": ["string", "null"]},
            },
        },
        "Offers": {
            "type": "object", "required": ["user_id", "personalized", "offers"],
            "properties": {
                "user_id": {"type": "string"},
                "personalized": {"type": "boolean"},
                "reason": {"type": "string", "description": "why fallback content was served",
                           "enum": list(FALLBACK_REASONS)},
                "offers": {"type": "array", "items": {"$ref": "#/components/schemas/Offer"}},
            },
        },
        "Recommendations": {
            "type": "object", "required": ["user_id", "slot", "personalized", "products"],
            "properties": {
                "user_id": {"type": "string"}, "slot": {"type": "string"},
                "personalized": {"type": "boolean"},
                "reason": {"type": "string", "enum": list(FALLBACK_REASONS)},
                "strategy": {"type": ["string", "null"]},
                "rule": {"type": ["string", "null"]},
                "ruleset": {"type": ["string", "null"]},
                "ruleset_version": {"type": ["integer", "null"]},
                "requested_strategy": {
                    "type": ["string", "null"],
                    "description": "the strategy the rule asked for (personalized lists)"},
                "fallback": {"type": "boolean", "description": "the requested strategy found "
                             "nothing and `strategy` (a fallback) answered"},
                "products": {"type": "array", "items": {"$ref": "#/components/schemas/Product"}},
            },
        },
        "Event": {"oneOf": [{"$ref": f"#/components/schemas/{_event_name(t)}"}
                            for t in EVENT_TYPES]},
        **{_event_name(t): _event_schema(t) for t in EVENT_TYPES},
        "EventBatch": {"type": "array", "minItems": 1, "maxItems": settings.max_batch_events,
                       "items": {"$ref": "#/components/schemas/Event"}},
        "Accepted": {
            "type": "object", "required": ["accepted", "event_ids"],
            "properties": {"accepted": {"type": "integer"},
                           "event_ids": {"type": "array", "items": {"type": "string"}}},
        },
        "Feedback": {
            "type": "object", "required": ["user_id"], "additionalProperties": False,
            "properties": {"user_id": {"type": "string", "minLength": 1, "maxLength": 200,
                                        "pattern": ID_PATTERN}},
        },
        "Redemption": {
            "type": "object", "required": ["user_id"], "additionalProperties": False,
            "properties": {"user_id": {"type": "string", "minLength": 1, "maxLength": 200,
                                        "pattern": ID_PATTERN},
                           "amount": {"type": "number", "minimum": 0, "maximum": MAX_NUMBER,
                                      "description": "order value"}},
        },
        "FeedbackRecorded": {
            "type": "object",
            "required": ["offer_id", "kind", "user_id", "rule", "ruleset", "duplicate"],
            "properties": {
                "offer_id": {"type": "string"},
                "kind": {"type": "string", "enum": ["impression", "redeem"]},
                "user_id": {"type": "string"}, "rule": {"type": ["string", "null"]},
                "ruleset": {"type": ["string", "null"]},
                "duplicate": {"type": "boolean",
                              "description": "true when this feedback was already stored"},
            },
        },
        "Erased": {
            "type": "object", "required": ["user_id", "erased", "kept", "tombstone"],
            "properties": {
                "user_id": {"type": "string"},
                "erased": {"type": "object", "additionalProperties": {"type": "integer"}},
                "kept": {"type": "object", "required": ["consent_withdrawn"],
                         "properties": {"consent_withdrawn": {
                             "type": "boolean", "description": "a withdrawn consent is "
                             "kept as a bare customers row (no personalization after)"}}},
                "tombstone": {
                    "type": "object", "required": ["erased_at", "expires_at"],
                    "description": "the user's events from before erased_at are dropped "
                                   "until expires_at (DECISIONS_ERASURE_TOMBSTONE_DAYS)",
                    "properties": {"erased_at": {"type": "string", "format": "date-time"},
                                   "expires_at": {"type": "string", "format": "date-time"}}},
            },
        },
        "Customer": {
            "type": "object",
            "description": "a flat customer record: it replaces the customer's attributes "
                           "(consent is kept); other names are custom attributes, read by "
                           "rules as customer.<name>; null means not known. The id is the "
                           "path's (a user_id here may only repeat it)",
            "properties": {
                "tier": {"type": ["string", "null"], "maxLength": 50, "pattern": NO_NUL},
                "country": {"type": ["string", "null"], "pattern": "^[A-Za-z]{2}$",
                            "description": "ISO 3166 alpha-2 code"},
                "signup_date": {"type": ["string", "null"], "format": "date"},
                "segments": {"type": ["array", "null"], "maxItems": 100,
                             "items": {"type": "string", "maxLength": 100,
                                       "pattern": NO_NUL}},
            },
            "propertyNames": {"pattern": "^[a-z][a-z0-9_]{0,40}$",
                              "not": {"enum": ["id", "user_id", *sorted(RESERVED)]}},
            "additionalProperties": {"anyOf": [
                {"type": "number", "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER},
                {"type": "string", "maxLength": 500, "pattern": NO_NUL},
                {"type": ["boolean", "null"]}]},
            "maxProperties": 55,
        },
        "CustomerStored": {
            "type": "object",
            "required": ["user_id", "tier", "country", "signup_date", "segments", "consent"],
            "properties": {
                "user_id": {"type": "string"}, "tier": {"type": ["string", "null"]},
                "country": {"type": ["string", "null"]},
                "signup_date": {"type": ["string", "null"], "format": "date"},
                "segments": {"type": "array", "items": {"type": "string"}},
                "consent": {"type": "boolean",
                            "description": "kept from consent events, never set here"},
            },
            "additionalProperties": {"type": ["number", "string", "boolean"]},
        },
        "Export": {
            "type": "object", "required": ["user_id", "postgres", "redis"],
            "properties": {"user_id": {"type": "string"},
                           "postgres": {"type": "object"}, "redis": {"type": "object"}},
        },
        "Ready": {
            "type": "object", "required": ["status", "failed", "checks"],
            "properties": {"status": {"type": "string", "enum": ["ready", "unavailable"]},
                           "failed": {"type": "array", "items": {"type": "string"}},
                           "checks": {"type": "object"}},
        },
    }


JSON_TYPES = {str: "string", int: "integer", float: "number", list: "array", bool: "boolean"}
PROPERTY_LIMITS: dict[str, dict[str, Any]] = {
    "price": {"minimum": 0, "maximum": MAX_NUMBER},
    "quantity": {"minimum": 1, "maximum": MAX_NUMBER},
    "total": {"minimum": -MAX_NUMBER, "maximum": MAX_NUMBER},
    "items": {"items": {"type": "object", "required": ["product_id", "price", "quantity"],
                        "properties": {"product_id": {"type": "string"},
                                       "price": {"type": "number", "minimum": -MAX_NUMBER,
                                                 "maximum": MAX_NUMBER},
                                       "quantity": {"type": "integer", "minimum": -MAX_NUMBER,
                                                    "maximum": MAX_NUMBER}}}},
}


def _event_name(event_type: str) -> str:
    return "Event_" + event_type


def _event_schema(event_type: str) -> dict[str, Any]:
    """One event type's JSON Schema, from the same table ``parse_event`` validates with."""
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, (types, needed) in PROPERTIES[event_type].items():
        kind = "number" if float in types else JSON_TYPES[types[0]]
        props[name] = {"type": kind, **PROPERTY_LIMITS.get(name, {})}
        if needed:
            required.append(name)
    ident = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": ID_PATTERN}
    return {
        "type": "object", "additionalProperties": False,
        "required": ["event_id", "type", "user_id", "ts", "properties"],
        "properties": {
            "event_id": ident, "user_id": ident,
            "type": {"type": "string", "enum": [event_type]},
            "ts": {"type": "string", "format": "date-time",
                   "description": "event time, ISO 8601 with a time zone; accepted from "
                                  "DECISIONS_EVENT_MAX_AGE_SECONDS before now to "
                                  "DECISIONS_EVENT_MAX_FUTURE_SECONDS after (422 otherwise)"},
            "properties": {"type": "object", "required": required, "properties": props},
        },
    }


FALLBACK_REASONS = ("auth_unavailable", "redis_unavailable", "database_unavailable",
                    "consent_withdrawn", "no_offers", "no_recommendations")


def _feedback(kind: str, body: str) -> dict[str, Any]:
    return {"post": {
        "operationId": f"offer_{kind}",
        "summary": f"Record an offer {kind} (idempotent)",
        "security": [{"bearer": []}],
        "x-scope": "events:write",
        "parameters": [{"name": "offer_id", "in": "path", "required": True,
                        "schema": {"type": "string", "minLength": 1, "pattern": r"^[^/]+$"}}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body}"}}}},
        "responses": {
            "201": _ok("stored", "FeedbackRecorded"),
            "200": _ok("already stored earlier (nothing changed)", "FeedbackRecorded"),
            "400": _error("body is not JSON"), **AUTH_ERRORS,
            "404": _error("no such offer for this user"),
            "413": _error("body too large"),
            "422": _error("invalid body, per field"), **RATE, **UNAVAILABLE,
        },
    }}


def document(settings: Settings) -> dict[str, Any]:
    read_security: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "decisions storefront API", "version": "1",
                 "description": "Offers and recommendations for storefronts, event collection, "
                                "offer feedback and privacy requests. Authenticate with "
                                "`Authorization: Bearer <API key>`."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "an API key dk_<prefix>_<secret>"}},
            "schemas": _schemas(settings),
        },
        "paths": {
            "/v1/users/{user_id}/offers": {"get": {
                "operationId": "get_offers",
                "summary": "The user's active offers, highest priority first",
                "security": read_security, "x-scope": "offers:read",
                "parameters": [USER_ID, IF_NONE_MATCH],
                "responses": {"200": {**_ok("offers (personalized, or the fallback set)",
                                            "Offers"), "headers": CACHE_HEADERS},
                              **READ_ERRORS},
            }},
            "/v1/users/{user_id}/recommendations": {"get": {
                "operationId": "get_recommendations",
                "summary": "Recommended products for a slot (in stock, not already bought)",
                "security": read_security, "x-scope": "offers:read",
                "parameters": [
                    USER_ID, IF_NONE_MATCH,
                    {"name": "slot", "in": "query", "required": False,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 100,
                                "default": "default"}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10}},
                ],
                "responses": {"200": {**_ok("products (personalized, or top sellers)",
                                            "Recommendations"), "headers": CACHE_HEADERS},
                              **READ_ERRORS},
            }},
            "/v1/events": {"post": {
                "operationId": "post_events",
                "summary": "Send one event or a batch; 202 once the broker acknowledged all",
                "security": read_security, "x-scope": "events:write",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [{"$ref": "#/components/schemas/Event"},
                              {"$ref": "#/components/schemas/EventBatch"}]}}}},
                "responses": {
                    "202": _ok("every event acknowledged by the broker", "Accepted"),
                    "400": _error("body is not JSON"), **AUTH_ERRORS,
                    "413": _error("body or batch too large"),
                    "422": _error("invalid events, per field ([index].field in a batch); "
                                  "nothing was accepted"),
                    **RATE,
                    "503": _error("the broker is unavailable; nothing was accepted, resend",
                                  retry_after=True),
                },
            }},
            "/v1/offers/{offer_id}/impression": _feedback("impression", "Feedback"),
            "/v1/offers/{offer_id}/redeem": _feedback("redeem", "Redemption"),
            "/v1/users/{user_id}": {"delete": {
                "operationId": "erase_user",
                "summary": "Erase everything held about the user (GDPR/CCPA)",
                "security": read_security, "x-scope": "admin",
                "parameters": [USER_ID],
                "responses": {"200": _ok("counts of what was erased", "Erased"),
                              "400": _error("invalid user id"), **AUTH_ERRORS, **UNAVAILABLE},
            }},
            "/v1/customers/{user_id}": {"put": {
                "operationId": "put_customer",
                "summary": "Set a customer's attributes (tier, country, signup date, custom "
                           "ones); the next decision reads them",
                "security": read_security, "x-scope": "customers:write",
                "parameters": [USER_ID],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Customer"}}}},
                "responses": {
                    "201": _ok("a new customer, stored", "CustomerStored"),
                    "200": _ok("the customer's attributes replaced", "CustomerStored"),
                    "400": _error("body is not JSON, or invalid user id"), **AUTH_ERRORS,
                    "413": _error("body too large"),
                    "422": _error("invalid record, per field"), **RATE, **UNAVAILABLE,
                },
            }},
            "/v1/users/{user_id}/export": {"get": {
                "operationId": "export_user",
                "summary": "Everything held about the user",
                "security": read_security, "x-scope": "admin",
                "parameters": [USER_ID],
                "responses": {"200": _ok("the user's data", "Export"),
                              "400": _error("invalid user id"), **AUTH_ERRORS, **UNAVAILABLE},
            }},
            "/healthz": {"get": {"operationId": "healthz", "summary": "The process is up",
                                 "security": [],
                                 "responses": {"200": {"description": "ok", "content": {
                                     "application/json": {"schema": {"type": "object"}}}}}}},
            "/readyz": {"get": {"operationId": "readyz", "security": [],
                                "summary": "Each dependency checked; names the failed ones",
                                "responses": {"200": _ok("ready", "Ready"),
                                              "503": {**_ok("not ready", "Ready"),
                                                      "headers": {"Retry-After": {
                                                          "schema": {"type": "integer"}}}}}}},
            "/metrics": {"get": {"operationId": "metrics", "security": [],
                                 "summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "Prometheus text format",
                                                       "content": {"text/plain": {
                                                           "schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"operationId": "openapi", "security": [],
                                      "summary": "This document",
                                      "responses": {"200": {"description": "OpenAPI 3",
                                                            "content": {"application/json": {
                                                                "schema": {"type": "object"}}}}}}},
        },
    }
