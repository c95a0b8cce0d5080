"""How numbers are written for people: shares as percent, counts with thousands separators.

One place for the review page, the sign-out record and the bench summary, so
that a fraction reads the same (one decimal, ``–`` when there is none) wherever
a reviewer meets it.
"""

from __future__ import annotations

MISSING = "–"


def percent(fraction: float | None) -> str:
    """``0.1234`` -> ``12.3%``; None -> ``–``."""
    return MISSING if fraction is None else f"{100 * fraction:.1f}%"


def percent_number(fraction: float | None) -> str:
    """``0.1234`` -> ``12.3`` (the number without its sign, for a range); None -> ``''``."""
    return "" if fraction is None else f"{100 * fraction:.1f}"


def percent_with_ci(fraction: float | None, low: float | None, high: float | None) -> str:
    """``12.3% (10.0–14.8)``: a fraction and its confidence interval; ``–`` without a fraction."""
    if fraction is None:
        return MISSING
    ci = f" ({percent_number(low)}–{percent_number(high)})" if low is not None and high is not None else ""
    return f"{percent_number(fraction)}%{ci}"


def ci_range(low: float | None, high: float | None) -> str:
    """``10.0%–14.8%``: a confidence interval with both signs."""
    return f"{percent(low)}–{percent(high)}"


def whole_percent(fraction: float) -> str:
    """``0.3`` -> ``30%`` (a threshold, a setting)."""
    return f"{100 * fraction:.0f}%"


def count(value: int | None) -> str:
    """``12345`` -> ``12,345``; None -> ``–``."""
    return MISSING if value is None else f"{value:,}"


def raw_value(value: float) -> str:
    """A CD125 cut-off in compensated raw units: four significant digits, thousands separated."""
    return f"{value:,.4g}"
