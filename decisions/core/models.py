"""Runtime tables: customers, catalog, decisions made, feedback, API keys, event archive."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from decisions.core.db import Base, utcnow


class Customer(Base):
    __tablename__ = "customers"
    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    tier: Mapped[str | None] = mapped_column(String(50))
    country: Mapped[str | None] = mapped_column(String(2))
    consent: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    signup_date: Mapped[date | None] = mapped_column(Date)
    segments: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list, server_default="{}")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )

    __table_args__ = (
        # the API reloads the withdrawn-consent list often: keep that lookup small
        Index("ix_customers_no_consent", "user_id", postgresql_where=text("NOT consent")),
    )


class Product(Base):
    __tablename__ = "products"
    product_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    price: Mapped[float] = mapped_column(Float)
    image_url: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(200), index=True)
    in_stock: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Decision(Base):
    """One action a rule produced (an offer, a recommendation, a segment change)."""

    __tablename__ = "decisions"
    action_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200), index=True)
    event_id: Mapped[str] = mapped_column(String(200))
    ruleset: Mapped[str] = mapped_column(String(200))
    ruleset_version: Mapped[int] = mapped_column(Integer)
    rule: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    reason: Mapped[dict[str, Any]] = mapped_column(JSONB)
    model_versions: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    event_ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # the OpenTelemetry trace of the event's decision (tracing on and sampled; else NULL)
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (Index("ix_decisions_rule_time", "ruleset", "rule", "decided_at"),)


class OfferFeedback(Base):
    __tablename__ = "offer_feedback"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    offer_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    rule: Mapped[str | None] = mapped_column(String(200))
    ruleset: Mapped[str | None] = mapped_column(String(200))
    amount: Mapped[float | None] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("offer_id", "kind", name="uq_offer_feedback_offer_kind"),)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Erasure(Base):
    """Tombstone of an erased user: events from before ``erased_at`` are not theirs any
    more (``decisions.runtime.erasure``). Kept ``DECISIONS_ERASURE_TOMBSTONE_DAYS``."""

    __tablename__ = "erasures"
    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ArchivedEvent(Base):
    """Every accepted event, partitioned by month of event time (see the migration)."""

    __tablename__ = "events"
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(50))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (
        Index("ix_events_user_ts", "user_id", "ts"),
        Index("ix_events_ts", "ts"),
        {"postgresql_partition_by": "RANGE (ts)"},
    )


class ModelVersion(Base):
    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    algorithm: Mapped[str] = mapped_column(String(100))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB)
    features: Mapped[list[str]] = mapped_column(ARRAY(Text))
    train_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    train_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    code_version: Mapped[str] = mapped_column(String(100))
    artifact: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    reference: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_versions_name_version"),)
