"""Build a channel from a short specification string or a dictionary."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from splitrl.envs.channels.base import PiecewiseConstantChannel
from splitrl.envs.channels.cellular import CellularChannel
from splitrl.envs.channels.constant import ConstantChannel
from splitrl.envs.channels.fading import BlockFadingChannel
from splitrl.envs.channels.gilbert_elliott import GilbertElliottChannel
from splitrl.envs.channels.markov import MarkovChannel
from splitrl.envs.channels.trace_replay import TraceChannel
from splitrl.envs.traces import TRACE_FORMATS, load_trace

CHANNEL_MODELS = ("constant", "gilbert-elliott", "markov", "fading", "cellular", "trace")
_ALIASES = {"ge": "gilbert-elliott", "block-fading": "fading"}


def make_channel(spec: str | Mapping[str, Any]) -> PiecewiseConstantChannel:
    """Build a channel.

    String forms:

    * ``"constant:RATE"``: :class:`ConstantChannel` at ``RATE`` bit/s, e.g. ``"constant:10e6"``
    * ``"gilbert-elliott"`` (or ``"ge"``), ``"markov"``, ``"fading"`` (or ``"block-fading"``),
      ``"cellular"``: the model with its default parameters
    * ``"trace:PATH"`` or ``"trace:FORMAT:PATH"``: :class:`TraceChannel` replaying a file, the
      format detected from the file unless given (``mahimahi``, ``pensieve`` or ``csv``)
    * ``"markov:PATH"`` or ``"markov:FORMAT:PATH"``: :meth:`MarkovChannel.fit` to a trace file

    A dictionary names the model under ``"model"`` and passes the other keys to its constructor,
    e.g. ``{"model": "fading", "bandwidth_mhz": 10}``. For ``"trace"`` the keys ``path``,
    ``format`` and ``bin_s`` load the file and the rest go to :class:`TraceChannel`; for
    ``"markov"`` a ``trace`` key (with optional ``format``, ``bin_s``) fits the chain to that file
    and the rest go to :meth:`MarkovChannel.fit`.

    :param spec: the specification
    :return: a channel; call ``reset(rng)`` before use
    :raises ValueError: unknown model name, malformed specification or invalid parameters
    :raises splitrl.envs.traces.TraceFormatError: a malformed trace file
    """
    if isinstance(spec, str):
        return _from_string(spec)
    if isinstance(spec, Mapping):
        return _from_mapping(spec)
    raise ValueError(f"a channel spec must be a string or a dict, got {type(spec).__name__}")


def _model_name(name: str) -> str:
    model = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if model not in CHANNEL_MODELS:
        raise ValueError(
            f"unknown channel model {name!r}; expected one of {', '.join(CHANNEL_MODELS)} "
            f"(aliases: {', '.join(_ALIASES)})"
        )
    return model


def _from_string(spec: str) -> PiecewiseConstantChannel:
    name, _, argument = spec.partition(":")
    model = _model_name(name)
    if model == "constant":
        try:
            rate = float(argument)
        except ValueError:
            raise ValueError(
                f"channel spec {spec!r}: expected 'constant:RATE' with RATE in bit/s, "
                "e.g. 'constant:10e6'"
            ) from None
        return _build(model, ConstantChannel, {"rate_bps": rate})
    if model in ("trace", "markov") and argument:
        fmt, _, path = argument.partition(":")
        if fmt.lower() not in TRACE_FORMATS or not path:
            fmt, path = "", argument
        trace = load_trace(path, fmt.lower() or None)
        if model == "trace":
            return TraceChannel(trace)
        return MarkovChannel.fit(trace)
    if model == "trace":
        raise ValueError(f"channel spec {spec!r}: expected 'trace:PATH' or 'trace:FORMAT:PATH'")
    if argument:
        raise ValueError(f"channel spec {spec!r}: model {model!r} takes no ':' argument")
    return _build(model, _CONSTRUCTORS[model], {})


def _from_mapping(spec: Mapping[str, Any]) -> PiecewiseConstantChannel:
    if "model" not in spec:
        raise ValueError(f"channel spec {dict(spec)!r} has no 'model' key")
    model = _model_name(str(spec["model"]))
    params = {key: value for key, value in spec.items() if key != "model"}
    if model == "trace":
        if "path" not in params:
            raise ValueError("a 'trace' channel spec needs a 'path' key")
        trace = _load(params)
        return _build(model, TraceChannel, {"trace": trace, **params})
    if model == "markov" and "trace" in params:
        params["path"] = params.pop("trace")
        trace = _load(params)
        return _build(model, MarkovChannel.fit, {"trace": trace, **params})
    return _build(model, _CONSTRUCTORS[model], params)


def _load(params: dict[str, Any]) -> Any:
    """Load the trace named by ``path``/``format``/``bin_s`` and remove those keys."""
    path = Path(params.pop("path"))
    fmt = params.pop("format", None)
    bin_s = float(params.pop("bin_s", 0.1))
    return load_trace(path, fmt, bin_s=bin_s)


def _build(
    model: str, constructor: Callable[..., PiecewiseConstantChannel], params: dict[str, Any]
) -> PiecewiseConstantChannel:
    try:
        return constructor(**params)
    except TypeError as error:
        raise ValueError(f"invalid parameters for channel model {model!r}: {error}") from None


_CONSTRUCTORS: dict[str, Callable[..., PiecewiseConstantChannel]] = {
    "constant": ConstantChannel,
    "gilbert-elliott": GilbertElliottChannel,
    "markov": MarkovChannel,
    "fading": BlockFadingChannel,
    "cellular": CellularChannel,
}
