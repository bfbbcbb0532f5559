"""Domain randomization over channels: a new model and new parameters, a new recorded trace, or a
new member of a mixture of such channels, every episode."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from splitrl.envs.channels.base import Channel, PiecewiseConstantChannel, private_generator
from splitrl.envs.channels.cellular import CellularChannel
from splitrl.envs.channels.fading import BlockFadingChannel
from splitrl.envs.channels.gilbert_elliott import GilbertElliottChannel
from splitrl.envs.channels.markov import MarkovChannel
from splitrl.envs.channels.trace_replay import TraceChannel
from splitrl.envs.traces import Trace, load_trace

#: probability that a Gilbert-Elliott draw has outages (a bad rate of 0)
OUTAGE_PROBABILITY = 0.3
#: the models an episode draws among by default
DEFAULT_MODELS = ("markov", "gilbert-elliott", "fading")
#: every model a :class:`RandomizedChannel` can draw
RANDOMIZED_MODELS = (*DEFAULT_MODELS, "cellular")
#: prefix of a :class:`TraceMixChannel` spec: ``"traces:PATH,PATH,..."``
TRACE_MIX_PREFIX = "traces:"
#: prefix of a :class:`ChannelMixture` spec: ``"mix:SPEC|SPEC|..."``
MIXTURE_PREFIX = "mix:"
#: what separates the member specs of a :class:`ChannelMixture` spec
MIXTURE_SEPARATOR = "|"


class EpisodeDrawnChannel(ABC):
    """A channel that draws a new channel at every reset and answers every query from it.

    Subclasses implement :meth:`_draw`; the drawn channel is :attr:`current`.
    """

    def __init__(self) -> None:
        #: the channel of the current episode
        self.current: PiecewiseConstantChannel | EpisodeDrawnChannel | None = None

    @abstractmethod
    def _draw(self, draws: np.random.Generator) -> PiecewiseConstantChannel | EpisodeDrawnChannel:
        """This episode's channel, built from ``draws`` (not yet reset)."""

    def reset(self, rng: np.random.Generator) -> None:
        """Draw this episode's channel, then start its realization."""
        draws = private_generator(rng)
        self.current = self._draw(draws)
        self.current.reset(draws)

    def _channel(self) -> PiecewiseConstantChannel | EpisodeDrawnChannel:
        if self.current is None:
            raise RuntimeError(f"call reset() before using a {type(self).__name__}")
        return self.current

    def capacity(self, t: float) -> float:
        """Uplink capacity in bit/s at time ``t`` of this episode's channel."""
        return self._channel().capacity(t)

    def transfer_time(self, n_bytes: int, t0: float) -> float:
        """Seconds this episode's channel needs for ``n_bytes`` from ``t0``."""
        return self._channel().transfer_time(n_bytes, t0)

    def capacities(self, t: np.ndarray) -> np.ndarray:
        """:meth:`capacity` at many times at once (numpy)."""
        return self._channel().capacities(t)

    def transfer_times(self, n_bytes: int | np.ndarray, t0: np.ndarray) -> np.ndarray:
        """:meth:`transfer_time` from many start times at once (numpy)."""
        return self._channel().transfer_times(n_bytes, t0)

    def mean_throughput(self, t0: float, t1: float) -> float:
        """This episode's capacity averaged over ``[t0, t1]`` in bit/s."""
        return self._channel().mean_throughput(t0, t1)


class RandomizedChannel(EpisodeDrawnChannel):
    """At every reset, one of the synthetic models with parameters drawn at random.

    For training a policy that has to generalize to links it never saw (domain randomization,
    Tobin et al., IROS 2017). Each episode draws, uniformly, one of ``models``:

    * ``"markov"``: a :class:`MarkovChannel` over 4 to 8 levels spread log-uniformly over the
      uplink range, scaled by a factor log-uniform in ``[1/3, 3]``, birth-death moves with
      probability 0.05 to 0.3 per slot of 0.1 to 1 s;
    * ``"gilbert-elliott"``: a :class:`GilbertElliottChannel` whose good rate is log-uniform over
      the range, whose bad rate is 0 (an outage) with probability :data:`OUTAGE_PROBABILITY` and
      otherwise log-uniform from a tenth of the low end to the low end, with mean sojourns of 1 to
      10 s (good) and 0.2 to 5 s (bad);
    * ``"fading"``: a :class:`BlockFadingChannel` with a bandwidth of 5 to 20 MHz;
    * ``"cellular"`` (not drawn by default): a :class:`CellularChannel` whose mean rate is
      log-uniform over the range, with a log standard deviation of 0.2 to 1.0, a correlation time
      log-uniform in 0.3 to 10 s, 0.01 to 0.5 outages per second (log-uniform) of median 0.1 to
      2 s (log-uniform) and log standard deviation 0.5 to 1.5. The ranges are wide on purpose;
      no trace was fitted.

    :param uplink_mbps: the network's ``(low, high)`` uplink capacity in Mbit/s
    :param models: the models to draw among, from :data:`RANDOMIZED_MODELS`
    """

    def __init__(
        self, uplink_mbps: tuple[float, float], models: Sequence[str] = DEFAULT_MODELS
    ) -> None:
        super().__init__()
        low, high = uplink_mbps
        if not 0 < low < high:
            raise ValueError(f"uplink range must satisfy 0 < low < high, got {uplink_mbps}")
        unknown = [model for model in models if model not in RANDOMIZED_MODELS]
        if unknown or not models:
            raise ValueError(
                f"models must be a non-empty selection of {', '.join(RANDOMIZED_MODELS)}, "
                f"got {list(models)}"
            )
        self.low_bps, self.high_bps = low * 1e6, high * 1e6
        #: the models an episode draws among
        self.models = tuple(models)

    def _draw(self, draws: np.random.Generator) -> PiecewiseConstantChannel:
        model = self.models[int(draws.integers(len(self.models)))]
        if model == "markov":
            n_levels = int(draws.integers(4, 9))
            scale = float(np.exp(draws.uniform(np.log(1 / 3), np.log(3))))
            levels = np.geomspace(self.low_bps, self.high_bps, n_levels) * scale
            move = float(draws.uniform(0.05, 0.3))
            matrix = np.zeros((n_levels, n_levels))
            for level in range(n_levels):
                neighbours = [n for n in (level - 1, level + 1) if 0 <= n < n_levels]
                for neighbour in neighbours:
                    matrix[level, neighbour] = move / 2
                matrix[level, level] = 1.0 - matrix[level].sum()
            return MarkovChannel(levels.tolist(), matrix, slot_s=float(draws.uniform(0.1, 1.0)))
        elif model == "gilbert-elliott":
            outage = draws.random() < OUTAGE_PROBABILITY
            bad = 0.0 if outage else self._log_uniform(draws, self.low_bps / 10, self.low_bps)
            return GilbertElliottChannel(
                good_rate_bps=self._log_uniform(draws, self.low_bps, self.high_bps),
                bad_rate_bps=bad,
                mean_good_s=float(draws.uniform(1.0, 10.0)),
                mean_bad_s=float(draws.uniform(0.2, 5.0)),
            )
        elif model == "fading":
            return BlockFadingChannel(bandwidth_mhz=float(draws.uniform(5.0, 20.0)))
        return CellularChannel(
            mean_rate_bps=self._log_uniform(draws, self.low_bps, self.high_bps),
            log_std=float(draws.uniform(0.2, 1.0)),
            correlation_s=self._log_uniform(draws, 0.3, 10.0),
            outage_rate_per_s=self._log_uniform(draws, 0.01, 0.5),
            median_outage_s=self._log_uniform(draws, 0.1, 2.0),
            outage_log_std=float(draws.uniform(0.5, 1.5)),
        )

    @staticmethod
    def _log_uniform(draws: np.random.Generator, low: float, high: float) -> float:
        return float(np.exp(draws.uniform(np.log(low), np.log(high))))


class TraceMixChannel(EpisodeDrawnChannel):
    """At every reset, one of several recorded traces, replayed from a random offset.

    For training on recorded links of one's own network: each episode draws a trace uniformly
    (not by length, so that a long trace does not crowd out the others), then replays it as a
    :class:`TraceChannel` does, from an offset drawn uniformly over its duration. To measure how a
    policy generalizes to a link it never saw, leave the traces it is evaluated on out of the mix.

    :param traces: the traces to draw among, at least one
    :param names: one name per trace (for people), by default ``trace-0``, ``trace-1``, ...
    """

    def __init__(self, traces: Sequence[Trace], names: Sequence[str] | None = None) -> None:
        super().__init__()
        if not traces:
            raise ValueError("a trace mix needs at least one trace")
        names = [f"trace-{k}" for k in range(len(traces))] if names is None else list(names)
        if len(names) != len(traces):
            raise ValueError(f"{len(names)} names for {len(traces)} traces")
        #: the traces an episode draws among, in order
        self.traces = tuple(traces)
        #: their names, in order
        self.names = tuple(names)
        self._channels = [TraceChannel(trace) for trace in self.traces]
        #: index of the current episode's trace, or ``None`` before the first reset
        self.drawn: int | None = None

    def _draw(self, draws: np.random.Generator) -> PiecewiseConstantChannel:
        self.drawn = int(draws.integers(len(self._channels)))
        return self._channels[self.drawn]


def trace_mix_paths(spec: str) -> list[str]:
    """The trace files a ``"traces:PATH,PATH,..."`` spec names, in order.

    :raises ValueError: a spec without the prefix, without a path, or naming a file twice
    """
    if not spec.startswith(TRACE_MIX_PREFIX):
        raise ValueError(f"a trace mix spec starts with {TRACE_MIX_PREFIX!r}, got {spec!r}")
    paths = [path.strip() for path in spec[len(TRACE_MIX_PREFIX) :].split(",")]
    if not all(paths):
        raise ValueError(f"trace mix spec {spec!r}: expected 'traces:PATH,PATH,...'")
    if len(set(paths)) != len(paths):
        raise ValueError(f"trace mix spec {spec!r} names a trace twice")
    return paths


def make_trace_mix(spec: str) -> TraceMixChannel:
    """The :class:`TraceMixChannel` of a ``"traces:PATH,PATH,..."`` spec (formats detected).

    :raises FileNotFoundError: a trace file that is not there
    :raises splitrl.envs.traces.TraceFormatError: a malformed trace file
    """
    paths = [Path(path) for path in trace_mix_paths(spec)]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"trace mix: trace {path} not found")
    return TraceMixChannel([load_trace(path) for path in paths], [path.name for path in paths])


def resolve_trace_paths(channel: object, resolve: Callable[[str], Path]) -> object:
    """A channel spec with the file of ``"trace:PATH"`` or each of ``"traces:PATH,..."`` replaced
    by ``resolve(PATH)``, also inside each member of a ``"mix:SPEC|..."``; any other spec
    unchanged.

    :raises ValueError: a malformed trace mix or mixture spec (:func:`trace_mix_paths`,
        :func:`mixture_specs`)
    """
    if isinstance(channel, str) and channel.startswith(MIXTURE_PREFIX):
        members = [str(resolve_trace_paths(member, resolve)) for member in mixture_specs(channel)]
        return MIXTURE_PREFIX + MIXTURE_SEPARATOR.join(members)
    if isinstance(channel, str) and channel.startswith("trace:"):
        return f"trace:{resolve(channel[len('trace:') :])}"
    if isinstance(channel, str) and channel.startswith(TRACE_MIX_PREFIX):
        paths = [str(resolve(path)) for path in trace_mix_paths(channel)]
        return TRACE_MIX_PREFIX + ",".join(paths)
    return channel


class ChannelMixture(EpisodeDrawnChannel):
    """At every reset, one of several channels, each drawn with equal probability.

    The members may themselves draw a new channel every episode (a :class:`RandomizedChannel`,
    a :class:`TraceMixChannel`), so a mixture can put recorded links and synthetic models with
    outages into one training distribution: ``"mix:randomized-all|traces:a.up,b.up"`` trains half
    the episodes on the synthetic models and half on the two traces. As with a trace mix, leave
    the links a policy is evaluated on out of it.

    :param members: the channels to draw among, at least two
    :param names: one name per member (for people), by default ``member-0``, ``member-1``, ...
    """

    def __init__(self, members: Sequence[Channel], names: Sequence[str] | None = None) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a channel mixture needs at least two members, got {len(members)}")
        names = [f"member-{k}" for k in range(len(members))] if names is None else list(names)
        if len(names) != len(members):
            raise ValueError(f"{len(names)} names for {len(members)} members")
        drawable: list[PiecewiseConstantChannel | EpisodeDrawnChannel] = []
        for name, member in zip(names, members, strict=True):
            if not isinstance(member, (PiecewiseConstantChannel, EpisodeDrawnChannel)):
                raise ValueError(
                    f"channel mixture member {name!r} is a {type(member).__name__}, which answers "
                    "no batch queries (a built-in channel model is needed)"
                )
            drawable.append(member)
        #: the channels an episode draws among, in order
        self.members = tuple(drawable)
        #: their names, in order
        self.names = tuple(names)
        #: index of the current episode's member, or ``None`` before the first reset
        self.drawn: int | None = None

    def _draw(self, draws: np.random.Generator) -> PiecewiseConstantChannel | EpisodeDrawnChannel:
        self.drawn = int(draws.integers(len(self.members)))
        return self.members[self.drawn]


def mixture_specs(spec: str) -> list[str]:
    """The member specs a ``"mix:SPEC|SPEC|..."`` spec names, in order.

    :raises ValueError: a spec without the prefix, with fewer than two members, an empty or
        repeated member, or a member that is itself a mixture
    """
    if not spec.startswith(MIXTURE_PREFIX):
        raise ValueError(f"a channel mixture spec starts with {MIXTURE_PREFIX!r}, got {spec!r}")
    members = [member.strip() for member in spec[len(MIXTURE_PREFIX) :].split(MIXTURE_SEPARATOR)]
    if len(members) < 2 or not all(members):
        raise ValueError(f"channel mixture spec {spec!r}: expected 'mix:SPEC|SPEC|...'")
    if len(set(members)) != len(members):
        raise ValueError(f"channel mixture spec {spec!r} names a member twice")
    nested = [member for member in members if member.startswith(MIXTURE_PREFIX)]
    if nested:
        raise ValueError(f"channel mixture spec {spec!r}: a member may not be a mixture")
    return members
