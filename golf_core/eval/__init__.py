"""Evaluation: the core scoring pass, its ledger, and the adapters that take part in it."""
