"""Simulation above the rule language and the runtime: dry runs, try-it and backtests."""
