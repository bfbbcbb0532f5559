"""Two-state (good/bad) Gilbert-Elliott channel."""

from __future__ import annotations

import math

from splitrl.envs.channels.markov import MarkovChannel


class GilbertElliottChannel(MarkovChannel):
    """Capacity switches between a good and a bad rate (Gilbert 1960, Elliott 1963).

    A two-state :class:`MarkovChannel`: per slot of ``slot_s`` seconds the chain leaves the good
    state with probability ``p_gb = slot_s / mean_good_s`` and the bad state with probability
    ``p_bg = slot_s / mean_bad_s``, so sojourns are geometric with the given means. The long-run
    fraction of time in the good state is ``mean_good_s / (mean_good_s + mean_bad_s)``.

    The defaults (7.5 and 1 Mbit/s, 6 s good and 2 s bad on average) resemble the Verizon LTE
    uplink trace of the Mahimahi collection: mean 5.875 Mbit/s (trace: 5.95) and a lag-1
    autocorrelation of 1 s throughput of 0.66 (trace: 0.75). A ``bad_rate_bps`` of 0 models
    outages.

    :param good_rate_bps: capacity in the good state in bit/s
    :param bad_rate_bps: capacity in the bad state in bit/s (may be 0)
    :param mean_good_s: mean sojourn in the good state in seconds (at least ``slot_s``)
    :param mean_bad_s: mean sojourn in the bad state in seconds (at least ``slot_s``)
    :param slot_s: slot length in seconds; sojourns are whole numbers of slots
    :param kwargs: :class:`PiecewiseConstantChannel` options
    """

    def __init__(
        self,
        good_rate_bps: float = 7.5e6,
        bad_rate_bps: float = 1e6,
        mean_good_s: float = 6.0,
        mean_bad_s: float = 2.0,
        slot_s: float = 0.01,
        **kwargs: float,
    ) -> None:
        for name, mean in (("mean_good_s", mean_good_s), ("mean_bad_s", mean_bad_s)):
            if not (math.isfinite(mean) and mean >= slot_s > 0.0):
                raise ValueError(
                    f"{name} must be finite and at least slot_s={slot_s:g}, got {mean}"
                )
        p_good_to_bad = slot_s / mean_good_s
        p_bad_to_good = slot_s / mean_bad_s
        super().__init__(
            (good_rate_bps, bad_rate_bps),
            ((1.0 - p_good_to_bad, p_good_to_bad), (p_bad_to_good, 1.0 - p_bad_to_good)),
            slot_s,
            **kwargs,
        )
        self.mean_good_s = float(mean_good_s)
        self.mean_bad_s = float(mean_bad_s)

    @classmethod
    def from_transition_probabilities(
        cls,
        good_rate_bps: float,
        bad_rate_bps: float,
        p_good_to_bad: float,
        p_bad_to_good: float,
        slot_s: float,
        **kwargs: float,
    ) -> GilbertElliottChannel:
        """Build the channel from per-slot transition probabilities instead of mean sojourns.

        :param good_rate_bps: capacity in the good state in bit/s
        :param bad_rate_bps: capacity in the bad state in bit/s
        :param p_good_to_bad: probability of leaving the good state per slot, in (0, 1]
        :param p_bad_to_good: probability of leaving the bad state per slot, in (0, 1]
        :param slot_s: slot length in seconds
        :param kwargs: :class:`PiecewiseConstantChannel` options
        """
        for name, p in (("p_good_to_bad", p_good_to_bad), ("p_bad_to_good", p_bad_to_good)):
            if not 0.0 < p <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {p}")
        return cls(
            good_rate_bps,
            bad_rate_bps,
            mean_good_s=slot_s / p_good_to_bad,
            mean_bad_s=slot_s / p_bad_to_good,
            slot_s=slot_s,
            **kwargs,
        )

    @property
    def good_fraction(self) -> float:
        """Long-run fraction of time in the good state."""
        return self.mean_good_s / (self.mean_good_s + self.mean_bad_s)

    def __repr__(self) -> str:
        good, bad = self.levels_bps
        return (
            f"GilbertElliottChannel(good_rate_bps={good:g}, bad_rate_bps={bad:g}, "
            f"mean_good_s={self.mean_good_s:g}, mean_bad_s={self.mean_bad_s:g}, "
            f"slot_s={self.slot_s:g})"
        )
