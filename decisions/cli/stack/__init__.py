"""Embedded services for a fresh machine: PostgreSQL, a Redis-protocol server, Tansu."""
