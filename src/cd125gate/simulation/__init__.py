"""Simulated tubes and cohorts with known truth."""
