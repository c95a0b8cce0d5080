"""cd125gate: CD125 (IL-5Ra) expression on leukemic blasts, from FCS files to a screening criterion.

The public face of the package; the layers below it are described in docs/architecture.md.

    >>> import cd125gate
    >>> settings = cd125gate.load_settings()
    >>> analysis = cd125gate.analyze_sample("stained.fcs", "control.fcs", settings)
    >>> analysis.result.criterion        # a cd125gate.SampleResult
"""

from importlib import import_module

from cd125gate.version import __version__

# Each public name is imported on first use: `import cd125gate` (and so every
# `cd125gate` command, e.g. `inspect`) must not pay for numpy, FlowKit or matplotlib.
_PUBLIC = {
    "analyze_sample": "cd125gate.analysis.pipeline",
    "SampleResult": "cd125gate.results",
    "load_settings": "cd125gate.settings",
    "read_fcs": "cd125gate.io.fcs",
    "InputError": "cd125gate.errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'cd125gate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
