"""Antigen density: CD125 antibodies bound per cell from calibration beads, and the assay's provenance."""
