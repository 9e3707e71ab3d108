"""decisions: real-time personalization decisions for e-commerce."""

__version__ = "0.1.0"
