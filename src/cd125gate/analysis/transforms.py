"""Display/gating scales: logicle or arcsinh for fluorescence, linear for scatter and Time.

Gates are found on transformed events and exported as Gating-ML that FlowKit
re-applies, so every transform here is FlowKit's own, to the last bit:

- logicle: ``flowkit.transforms.LogicleTransform(T, W, M, A)``, i.e. flowutils'
  logicle (~0.12 s per million values). ``fast_logicle`` is a table-based
  logicle ~4x faster and within 1e-11 of it, for the bulk of the events; not
  being bit-identical, it could count an event lying on a gate boundary (a
  percentile lands on an event's own value whenever events tie) differently
  from FlowKit, so ``boundaries.settle_in_place`` recomputes with ``logicle`` every event
  close enough to a boundary for that to matter (``scripts/bench_transforms.py``
  shows the case).
- arcsinh: ``flowkit.transforms.AsinhTransform(T, M, A)`` with ``A = 0`` and
  ``M = arcsinh(T / cofactor) / ln(10)``. FlowKit computes
  ``arcsinh(x * sinh(M ln 10) / T) / (M ln 10)``, and ``sinh(M ln 10) / T``
  is then ``1 / cofactor``: the familiar ``arcsinh(x / cofactor)``, rescaled so
  that T maps to 1.
- linear: the compensated values themselves (no FlowKit transform).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cd125gate.errors import InputError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from cd125gate.settings import Transform


@dataclass(frozen=True)
class Scale:
    """How one channel is displayed and gated: raw (compensated) units <-> transformed units."""

    channel: str            # $PnN
    kind: str               # "linear" | "logicle" | "arcsinh"
    params: dict[str, float]  # e.g. {"T": 262144, "W": 0.5, "M": 4.5, "A": 0} or {"cofactor": 150}

    def forward(self, raw: ArrayLike) -> np.ndarray | float:
        return forward(self, raw)

    def inverse(self, transformed: ArrayLike) -> np.ndarray | float:
        return inverse(self, transformed)


LN10 = math.log(10.0)


# --- logicle ------------------------------------------------------------------


def check_logicle(T: float, W: float, M: float, A: float) -> None:
    """Raise ValueError unless (T, W, M, A) is a valid logicle (Gating-ML 2.0 limits)."""
    if not all(math.isfinite(v) for v in (T, W, M, A)):
        raise ValueError(f"logicle parameters must be finite: T={T}, W={W}, M={M}, A={A}")
    if T <= 0 or M <= 0:
        raise ValueError(f"logicle needs T > 0 and M > 0, got T={T}, M={M}")
    if W < 0 or 2 * W > M:
        raise ValueError(f"logicle needs 0 <= W <= M/2, got W={W}, M={M}")
    if A < -W or A > M - 2 * W:
        raise ValueError(f"logicle needs -W <= A <= M - 2W, got A={A}, W={W}, M={M}")


def logicle(values: ArrayLike, T: float, W: float, M: float, A: float) -> np.ndarray:
    """Logicle of ``values``, exactly as FlowKit's ``LogicleTransform`` computes it.

    Parameters
    ----------
    values : array_like
        Data values (compensated, raw units).
    T, W, M, A : float
        Top of scale, linear width (decades), total decades, extra negative decades.

    Returns
    -------
    numpy.ndarray
        float64, same shape as ``values``. Non-finite values give NaN.

    Notes
    -----
    flowutils returns -1 where its root search fails: for NaN and infinite
    input (wrapped here: NaN instead) and, with ``W = 0`` only, for
    0 < |x| < ~1e-8 T, whose true logicle is ~0. That last case is kept, so
    that FlowKit re-applying exported gates sees the same values.
    """
    from flowutils.transforms import logicle as flowutils_logicle

    check_logicle(T, W, M, A)
    x = np.asarray(values, dtype=np.float64)
    y = flowutils_logicle(x.ravel(), None, t=T, m=M, w=W, a=A).reshape(x.shape)
    y[~np.isfinite(x)] = np.nan
    return y


# Table step in arcsinh(x / s) units: 1/64 keeps the Newton-polished error below 1e-11.
TABLE_STEP = 1.0 / 64


def fast_logicle(values: ArrayLike, T: float, W: float, M: float, A: float) -> np.ndarray:
    """Logicle within 1e-10 of `logicle`, about 4x faster; for transforming whole tubes.

    The table is exact at its nodes (flowutils on a few thousand values,
    uniform in arcsinh(x / s), where logicle is nearly linear); linear
    interpolation between nodes is then polished with one Newton step on the
    closed-form biexponential x = B(y) (Moore & Parks 2012). With W = 0,
    flowutils returns -1 for 0 < |x| < ~1e-8 T (a failed root search) and
    FlowKit re-applies gates on those values, so W = 0 takes `logicle` itself.
    """
    x = np.asarray(values, dtype=np.float64)
    if W == 0 or x.size == 0:
        return logicle(x, T, W, M, A)
    check_logicle(T, W, M, A)
    biexp = _biexponential(T, W, M, A)
    a, b, c, d, _, x1 = biexp
    s = (a * b * math.exp(b * x1) + c * d * math.exp(-d * x1)) / b  # slope of B at x1, per b
    finite = np.isfinite(x)
    x = np.where(finite, x, 0.0)
    # arcsinh is increasing, so the table spans arcsinh of the extremes
    u_lo, u_hi = (float(u) for u in np.arcsinh(np.array([x.min(), x.max()]) / s))
    grid = logicle(s * np.sinh(u_lo + TABLE_STEP * np.arange(int((u_hi - u_lo) / TABLE_STEP) + 3)),
                   T, W, M, A)
    table = (grid, np.diff(grid), s, u_lo)
    y = np.empty_like(x)
    # In blocks: the dozen temporaries of one block stay in cache (twice as fast at 1M events).
    for start in range(0, x.size, BLOCK_VALUES):
        block = slice(start, start + BLOCK_VALUES)
        y[block] = _table_logicle(x[block], table, biexp)
    y[~finite] = np.nan
    return y


# Values per block in `fast_logicle`.
BLOCK_VALUES = 1 << 16


def _table_logicle(x, table, biexp):
    """Logicle of finite ``x`` from the table, polished by one Newton step on B(y) = x."""
    grid, slope, s, u_lo = table
    a, b, c, d, f, x1 = biexp
    position = (np.arcsinh(x / s) - u_lo) / TABLE_STEP
    i = position.astype(np.intp)
    y = grid[i] + (position - i) * slope[i]
    r = np.abs(y - x1) + x1
    up, down = a * np.exp(b * r), c * np.exp(-d * r)
    y -= (np.copysign(up - down + f, y - x1) - x) / (b * up + d * down)
    return y


def _biexponential(T, W, M, A):
    """(a, b, c, d, f, x1) of the logicle's inverse B(y) = a e^(by) - c e^(-dy) + f (Parks 2006)."""
    w, x2 = W / (M + A), A / (M + A)
    x1, x0, b = x2 + w, x2 + 2 * w, (M + A) * LN10
    lo, hi = 0.0, b  # d: root of 2 (ln d - ln b) + w (b + d) = 0 in (0, b), by bisection
    while hi - lo > 2 * b * np.finfo(float).eps:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if 2 * (math.log(mid) - math.log(b)) + w * (b + mid) < 0 else (lo, mid)
    d = 0.5 * (lo + hi)
    c_a = math.exp(x0 * (b + d))
    mf_a = math.exp(b * x1) - c_a / math.exp(d * x1)
    a = T / ((math.exp(b) - mf_a) - c_a / math.exp(d))
    return a, b, c_a * a, d, -mf_a * a, x1


def logicle_inverse(transformed: ArrayLike, T: float, W: float, M: float, A: float) -> np.ndarray:
    """Data values of logicle-scale values (flowutils' closed form)."""
    from flowutils.transforms import logicle_inverse as flowutils_inverse

    check_logicle(T, W, M, A)
    y = np.asarray(transformed, dtype=np.float64)
    return flowutils_inverse(y.ravel(), None, t=T, m=M, w=W, a=A).reshape(y.shape)


def fit_logicle(values: ArrayLike, T: float, M: float = 4.5, A: float = 0.0, negative_quantile: float = 0.05,
                max_width: float = 1.5) -> dict[str, float]:
    """Logicle parameters for one channel, W fitted from its negative values.

    As flowCore's ``estimateLogicle`` (Parks et al. 2006): with ``r`` the
    ``negative_quantile`` of the negative values, ``W = (M - log10(T / |r|)) / 2``,
    so that the linear region is just wide enough for the negative spread.

    Parameters
    ----------
    values : array_like
        Compensated values of the channel (non-finite values are ignored).
    T : float
        The channel's range ($PnR); the data maximum is used when larger.
    M, A : float
        Decades of the display and extra negative decades.
    negative_quantile : float
        Quantile of the negative values that sets W.
    max_width : float
        W is clipped to [0, max_width]; W is 0 without negative values.

    Returns
    -------
    dict
        ``{"T": ..., "W": ..., "M": ..., "A": ...}`` as plain floats.

    Raises
    ------
    ValueError
        If the resulting parameters are not a valid logicle.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    top = max(float(T), float(x.max())) if x.size else float(T)
    negative = x[x < 0]
    width = 0.0
    if negative.size and top > 0:  # top <= 0 is refused below, with its reason
        r = float(np.quantile(negative, negative_quantile))
        width = (M - math.log10(top / abs(r))) / 2
    width = min(max(width, 0.0), float(max_width))
    params = {"T": top, "W": width, "M": float(M), "A": float(A)}
    check_logicle(**params)
    return params


# --- arcsinh ------------------------------------------------------------------


def asinh_parameters(params: Mapping[str, float]) -> tuple[float, float, float]:
    """FlowKit ``AsinhTransform`` (T, M, A) of our ``{"cofactor", "T"}`` arcsinh."""
    T, cofactor = float(params["T"]), float(params["cofactor"])
    return T, math.asinh(T / cofactor) / LN10, 0.0


# --- scales -------------------------------------------------------------------


def forward(scale: Scale, raw: ArrayLike) -> np.ndarray | float:
    """Transformed values of raw (compensated) ``raw`` on ``scale``.

    Returns a float64 array of the same shape, or a float for a scalar.
    """
    x = np.asarray(raw, dtype=np.float64)
    if scale.kind == "linear":
        y = x.copy()
    elif scale.kind == "logicle":
        y = logicle(x, **_logicle_args(scale))
    elif scale.kind == "arcsinh":
        from flowutils.transforms import asinh

        T, M, A = asinh_parameters(scale.params)
        y = asinh(x, None, T, M, A)
    else:
        raise ValueError(f"unknown scale kind {scale.kind!r} for {scale.channel}")
    return y if y.ndim else float(y)


def inverse(scale: Scale, transformed: ArrayLike) -> np.ndarray | float:
    """Raw (compensated) values of ``transformed`` values on ``scale``."""
    y = np.asarray(transformed, dtype=np.float64)
    if scale.kind == "linear":
        x = y.copy()
    elif scale.kind == "logicle":
        x = logicle_inverse(y, **_logicle_args(scale))
    elif scale.kind == "arcsinh":
        from flowutils.transforms import asinh_inverse

        T, M, A = asinh_parameters(scale.params)
        x = asinh_inverse(y, None, T, M, A)
    else:
        raise ValueError(f"unknown scale kind {scale.kind!r} for {scale.channel}")
    return x if x.ndim else float(x)


def _logicle_args(scale):
    return {key: float(scale.params[key]) for key in ("T", "W", "M", "A")}


def make_scales(events: np.ndarray, channel_names: Sequence[str], fluorescence_channels: Collection[str],
                ranges: Mapping[str, float], transform: Transform) -> dict[str, Scale]:
    """One Scale per channel: fitted logicle (or arcsinh) for fluorescence, else linear.

    Parameters
    ----------
    events : numpy.ndarray
        Compensated events, (n_events, n_channels), columns as ``channel_names``.
    channel_names : sequence of str
        $PnN of the columns.
    fluorescence_channels : collection of str
        Channels to put on a logicle/arcsinh scale; all others (scatter, Time,
        anything else) stay linear.
    ranges : mapping
        $PnN -> $PnR of each fluorescence channel (the logicle/arcsinh top T).
    transform : settings.Transform
        The ``transform`` section of the analysis settings (checked when loaded).

    Returns
    -------
    dict
        $PnN -> Scale.

    Raises
    ------
    InputError
        If a channel has no valid logicle (a non-positive range and no positive data).
    """
    scales = {}
    for j, name in enumerate(channel_names):
        if name not in fluorescence_channels:
            scales[name] = Scale(name, "linear", {})
        elif transform.kind == "logicle":
            try:
                params = fit_logicle(events[:, j], ranges[name], M=transform.logicle.M, A=transform.logicle.A,
                                     negative_quantile=transform.logicle.negative_quantile,
                                     max_width=transform.logicle.max_width)
            except ValueError as exc:  # e.g. a $PnR of 0 with no positive data
                raise InputError(f"channel {name}", f"no logicle scale: {exc}") from None
            scales[name] = Scale(name, "logicle", params)
        else:
            column = events[:, j][np.isfinite(events[:, j])]
            top = max(float(ranges[name]), float(column.max()) if column.size else 0.0)
            scales[name] = Scale(name, "arcsinh", {"cofactor": float(transform.arcsinh.cofactor), "T": top})
    return scales


def apply_scales(events: np.ndarray, channel_names: Sequence[str], scales: Mapping[str, Scale], copy: bool = True,
                 fast: bool = False) -> np.ndarray:
    """Transformed float64 ``events`` (a copy, or in place with ``copy=False``), columns in order.

    ``fast=True`` uses `fast_logicle` for logicle scales (see the module notes).
    The result is column-major: every later step reads whole channels.
    """
    out = np.array(events, dtype=np.float64, copy=copy, order="F")
    for j, name in enumerate(channel_names):
        scale = scales[name]
        if fast and scale.kind == "logicle":
            out[:, j] = fast_logicle(out[:, j], **_logicle_args(scale))
        elif scale.kind != "linear":
            out[:, j] = forward(scale, out[:, j])
    return out


# --- FlowKit export -------------------------------------------------------------


def transform_id(scale: Scale) -> str:
    """Stable Gating-ML id of the scale's transform, e.g. ``logicle_CD125_PE-A``.

    Gating-ML ids are XML NCNames, so characters other than letters, digits,
    '.', '-' and '_' become '_'. FlowKit refuses a duplicate id when the
    transform is added, so two channels can never share one by accident.
    """
    return f"{scale.kind}_" + re.sub(r"[^A-Za-z0-9._-]", "_", scale.channel)


def to_flowkit(scale: Scale) -> Any:
    """The FlowKit transform equal to ``scale`` (None for linear: no transform)."""
    from flowkit import transforms

    if scale.kind == "linear":
        return None
    if scale.kind == "logicle":
        p = _logicle_args(scale)
        return transforms.LogicleTransform(
            param_t=p["T"], param_w=p["W"], param_m=p["M"], param_a=p["A"]
        )
    if scale.kind == "arcsinh":
        T, M, A = asinh_parameters(scale.params)
        return transforms.AsinhTransform(param_t=T, param_m=M, param_a=A)
    raise ValueError(f"unknown scale kind {scale.kind!r} for {scale.channel}")
