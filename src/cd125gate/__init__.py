"""cd125gate: CD125 (IL-5Ra) expression on leukemic blasts, from FCS files to a screening criterion."""

__version__ = "0.1.0"
