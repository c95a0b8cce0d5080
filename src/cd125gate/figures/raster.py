"""Figures as files: a Figure at the pages' DPI, plain text, and PNG/SVG/PDF written the same every run.

PNGs are encoded here (``png_bytes``), not by Pillow: no row filter and a fast
zlib level.
Axes can be made ahead for the next page (``make_spare_axes``) while the
process waits for its sample. All text is plain text: a ``$`` in a channel
name, sample id, reason or path is printed as is, never parsed as mathtext.

matplotlib is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from cd125gate.io.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.gridspec import SubplotSpec

FORMATS = ("png", "svg", "pdf")
DPI = 100
# zlib level of the PNGs: 1 encodes a page ~2.5x faster than the default 6, for a file
# ~20% larger (flat colours and text compress well at any level).
PNG_COMPRESSION = 1
# No dates or software versions in the files: the same input gives the same bytes.
METADATA = {
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None},
}


@contextmanager
def plain_text() -> Iterator[None]:
    """Every Text made (and drawn) inside is plain text, not mathtext, and not hinted.

    User text (channel names, sample ids, reasons, folder names, FCS keywords)
    may hold ``$...^...$``, which mathtext would typeset or refuse with an
    exception; nothing here is meant as mathtext (decade labels are Unicode
    superscripts). Text reads this setting when it is created, so both the
    building and the saving of a figure run inside.

    Hinting (fitting glyphs to the pixel grid, at matplotlib's default eight
    times the horizontal resolution) took a third of a QC page's time in the
    raster backend (~0.15 s of ~0.45 s per page); unhinted text is as legible
    at the pages' 100 dpi, and vector formats never hint.
    """
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False, "text.hinting": "no_hinting"}):
        yield


def check_formats(formats: Iterable[str]) -> list[str]:
    """The formats to write, PNG first and always; an unknown one is a ValueError."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown figure format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    return ["png"] + [f for f in FORMATS[1:] if f in formats]


def save(fig: Figure, out_dir: Path | str, stem: str, formats: Iterable[str]) -> list[Path]:
    """Write ``stem.<fmt>`` atomically for each format, with no dates in the files."""
    import matplotlib

    paths = []
    for fmt in formats:
        buffer = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": "cd125gate", "pdf.compression": 6, "text.parse_math": False}):
            fig.savefig(buffer, format=fmt, dpi=DPI, metadata=METADATA[fmt])
        path = Path(out_dir) / f"{stem}.{fmt}"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


# Figures and Axes made ahead (see `make_spare_axes`), by kind of figure ("page", "key");
# each process has its own.
_SPARE_FIGURES: dict[str, list[tuple[Figure, list[Axes]]]] = {}


def make_spare_axes(count: int, figsize: tuple[float, float], enough: Callable[[], bool] = lambda: False,
                    kind: str = "page") -> None:
    """Make a Figure and up to ``count`` Axes for the next figure of ``kind``, before its sample is known.

    Making an Axes (its spines, ticks and texts) costs ~14 ms: ~0.15 s of a
    page's ~0.4 s. `figure_worker` makes them while the sample is analysed,
    stopping as soon as ``enough()`` says the page is wanted now; the page
    then takes them in order, placed where it puts its panels (`add_axes`),
    and drops the ones it does not need. They are made with the page's text
    settings, so the page is the same as one made from nothing.
    """
    with plain_text():
        fig = new_figure(figsize)
        spec = fig.add_gridspec(1, 1)[0, 0]
        axes = []
        while len(axes) < count and not enough():
            axes.append(fig.add_subplot(spec))
    _SPARE_FIGURES.setdefault(kind, []).append((fig, axes))


def page_figure(figsize: tuple[float, float], kind: str = "page") -> Figure:
    """A Figure of ``kind``: the one made ahead if any (its spare Axes in ``cd125gate_spare_axes``)."""
    spares = _SPARE_FIGURES.get(kind)
    if spares:
        fig, axes = spares.pop()
        fig.set_size_inches(figsize)
    else:
        fig, axes = new_figure(figsize), []
    fig.cd125gate_spare_axes = axes
    return fig


def drop_spare_axes(fig: Figure) -> None:
    """Remove the Axes made ahead for ``fig`` that it did not use."""
    for ax in getattr(fig, "cd125gate_spare_axes", []):
        fig.delaxes(ax)
    fig.cd125gate_spare_axes = []


def add_axes(fig: Figure, spec: SubplotSpec) -> Axes:
    """An Axes at ``spec``: the page's next spare one if it has any left, else a new one."""
    spares = getattr(fig, "cd125gate_spare_axes", [])
    if not spares:
        return fig.add_subplot(spec)
    ax = spares.pop(0)
    ax.set_subplotspec(spec)
    return ax


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A Figure at DPI whose PNGs are written by ``png_bytes`` (SVG and PDF as matplotlib writes them)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    _png_canvas()(fig)
    return fig


@cache
def _png_canvas() -> type:
    """The Agg canvas class whose ``print_png`` encodes with ``png_bytes``, not Pillow."""
    import threading

    from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg

    renderers = {}

    class PngCanvas(FigureCanvasAgg):
        def get_renderer(self) -> RendererAgg:
            # One renderer per page size (and thread: two figures drawn at once must not
            # share pixels) for the whole process: matplotlib caches text measurements per
            # renderer, and the tick labels, axis titles and legends repeat from one figure
            # to the next. Each draw clears it first.
            w, h = self.figure.bbox.size
            key = (threading.get_ident(), w, h, self.figure.dpi)
            if key not in renderers:
                renderers[key] = RendererAgg(w, h, self.figure.dpi)
            self.renderer = renderers[key]
            return self.renderer

        # savefig passes dpi, facecolor, ... to a print method outside matplotlib; it has
        # already applied them to the figure, as it does for Agg's own print_png.
        def print_png(self, filename_or_obj: IO[bytes] | Path | str, *, metadata: dict | None = None,
                      pil_kwargs: dict | None = None, **_applied_by_savefig: object) -> None:
            self.draw()
            data = png_bytes(np.asarray(self.buffer_rgba()), self.figure.dpi, metadata)
            if hasattr(filename_or_obj, "write"):
                filename_or_obj.write(data)
            else:
                Path(filename_or_obj).write_bytes(data)

    return PngCanvas


def png_bytes(rgba: np.ndarray, dpi: float, metadata: dict[str, str | None] | None = None) -> bytes:
    """PNG of an (h, w, 4) uint8 image: RGB when fully opaque, no row filter, zlib at PNG_COMPRESSION.

    Pillow picks a filter for every row (adaptive filtering) whatever the zlib
    level: on a page of flat colours and text that costs more than it saves
    (measured on a 1720 x 965 page: Pillow at level 1, 55 ms and 273 kB; this,
    20 ms and 245 kB). ``metadata`` entries that are not None become tEXt chunks.
    """
    import struct
    import zlib

    height, width = rgba.shape[:2]
    opaque = bool((rgba[..., 3] == 255).all())
    pixels = rgba[..., :3] if opaque else rgba
    rows = np.empty((height, 1 + width * pixels.shape[2]), dtype=np.uint8)
    rows[:, 0] = 0  # filter type None on every row
    rows[:, 1:] = pixels.reshape(height, -1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    per_metre = int(dpi / 0.0254 + 0.5)
    parts = [b"\x89PNG\r\n\x1a\n",
             chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2 if opaque else 6, 0, 0, 0)),
             chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1))]
    for key, value in (metadata or {}).items():
        if value is not None:
            parts.append(chunk(b"tEXt", key.encode("latin-1") + b"\0" + str(value).encode("latin-1", "replace")))
    parts += [chunk(b"IDAT", zlib.compress(rows.tobytes(), PNG_COMPRESSION)), chunk(b"IEND", b"")]
    return b"".join(parts)
