"""Kept for the workflow's rules until they import from ``panel``; the `panel` command is ``cli_panel``."""

from .panel import sheet_problems  # noqa: F401  # moved: sheet_problems (workflow/rules/common.smk)
