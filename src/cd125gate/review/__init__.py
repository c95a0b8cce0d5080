"""Batch review: screening table, reviewer decisions, re-gating, report page, sign-out record."""
