"""QC figures: the per-tube page, key panels, bead and reviewed figures."""
