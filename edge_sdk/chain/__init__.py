"""The chain: block rules, fork choice, exact aggregation, in-memory and SQLite views, the rewards ledger."""
