"""A pair of tubes made ready for gating: compensated with one matrix, transformed on shared scales."""

from .errors import InputError
from .model import TubeAnalysis


def prepare(stained_fcs, control_fcs, markers, comp, settings, both):
    """Compensate both tubes with one matrix and transform them with the stained tube's scales.

    The control shares the stained tube's scales so that its CD125 values,
    and so the threshold, are on the same axis.

    :param both: ``both(stained_call, control_call)`` runs the two calls (side by side or in turn)
    :return: (stained TubeAnalysis, control TubeAnalysis or None,
              {role: compensated events}, kept for ``gating.settle``)
    """
    from . import compensation, panel, transforms

    minimum = settings.gating.min_events
    if len(stained_fcs.events) < minimum:
        raise InputError(stained_fcs.path, f"only {len(stained_fcs.events)} events; "
                                           f"at least {minimum} are needed")

    def compensate_control():
        if control_fcs is None:
            return None
        if comp.source != "none":
            compensation.validate_matrix(comp.channels, comp.matrix, control_fcs.channel_names(),
                                         control_fcs.path)
        return compensation.compensate(control_fcs.events, control_fcs.channel_names(), comp)

    compensated = both(
        lambda: compensation.compensate(stained_fcs.events, stained_fcs.channel_names(), comp),
        compensate_control)
    fluor = panel.fluorescence_channels(stained_fcs.channels, markers)
    ranges = {c.name: c.range for c in stained_fcs.channels}
    scales = transforms.make_scales(compensated[0], stained_fcs.channel_names(), fluor, ranges,
                                   settings.transform)
    stained, control = both(
        lambda: _tube("stained", stained_fcs, compensated[0], markers, scales, comp),
        lambda: control_fcs and _tube("control", control_fcs, compensated[1], markers, scales, comp))
    kept = {"stained": stained[1]}
    if control is not None:
        kept["control"] = control[1]
    return stained[0], control[0] if control is not None else None, kept


def _tube(role, fcs, compensated, markers, scales, comp):
    """A TubeAnalysis of compensated events, transformed fast (see `gating.settle`).

    Returns the tube and its compensated events, columns as the tube's channels.
    """
    from . import transforms

    names = fcs.channel_names()
    missing = [c for c in scales if c not in names]
    if missing:
        raise InputError(fcs.path, f"channel(s) {', '.join(missing)} missing")
    if list(scales) != names:
        compensated = compensated[:, [names.index(c) for c in scales]]
    data = transforms.apply_scales(compensated, list(scales), scales, fast=True)
    tube = TubeAnalysis(role, fcs, list(scales), markers, data, scales, [], compensation=comp.source)
    return tube, compensated
