"""The admin's pages, one module per area; each exposes ``routes``."""
