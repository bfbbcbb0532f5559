"""Clipping rules: the range ``[lo, hi]`` a linear quantizer covers, per row of a 2-D view.

``clip`` is one of

* ``None``: the full range, ``[min, max]``;
* a percentile ``p`` in ``(50, 100]`` (a number, or the string ``"percentile:p"``): for a
  non-negative tensor ``[min, percentile(p)]``, otherwise ``[percentile(100 - p), percentile(p)]``;
* ``"aciq"``: the analytic rule of ACIQ (Banner et al., 2019) that minimizes clipping plus
  rounding mean-squared error under a Laplace model. A non-negative (post-ReLU) tensor is
  modelled as ``min`` plus an exponential of mean ``b`` (the mean of the values above ``min``)
  and clipped to ``[min, min + t1[bits] * b]``; any other tensor as a Laplace of centre ``mu``
  (the mean) and scale ``b`` (the mean absolute deviation) clipped to ``mu +- t2[bits] * b``.
  The range never grows beyond ``[min, max]``.

The ACIQ factors solve ``d/dt [2 exp(-t) + t**2 * c] = 0`` where ``c`` is the rounding noise of
a step ``t / (2**bits - 1)`` (one-sided) or ``2t / (2**bits - 1)`` (two-sided) in units of ``b``:
``t = 12 (2**bits - 1)**2 exp(-t)`` and ``t = 3 (2**bits - 1)**2 exp(-t)`` respectively.
"""

from __future__ import annotations

import math

import numpy as np

from splitrl.codecs.errors import CodecError

ClipSpec = float | str | None
_PERCENTILE_PREFIX = "percentile:"


def _solve_aciq_factor(noise_weight: float) -> float:
    # Newton's method on f(t) = t - w exp(-t), which is increasing and convex: converges from t=1.
    factor = 1.0
    for _ in range(50):
        residual = factor - noise_weight * math.exp(-factor)
        factor -= residual / (1.0 + noise_weight * math.exp(-factor))
    return factor


ACIQ_ONE_SIDED = {b: _solve_aciq_factor(12.0 * (2**b - 1) ** 2) for b in range(1, 9)}
ACIQ_TWO_SIDED = {b: _solve_aciq_factor(3.0 * (2**b - 1) ** 2) for b in range(1, 9)}


def parse_clip(clip: ClipSpec) -> float | str | None:
    """Validate a clip specification.

    :return: ``None``, a percentile in ``(50, 100]`` or ``"aciq"``.
    :raises CodecError: for anything else.
    """
    if clip is None or clip == "aciq":
        return clip
    percentile: object = clip
    if isinstance(clip, str):
        if not clip.startswith(_PERCENTILE_PREFIX):
            raise CodecError(
                f"clip must be None, a percentile, 'percentile:P' or 'aciq', got {clip!r}"
            )
        try:
            percentile = float(clip[len(_PERCENTILE_PREFIX) :])
        except ValueError:
            raise CodecError(f"clip {clip!r}: the percentile is not a number") from None
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)):
        raise CodecError(f"clip must be None, a percentile, 'percentile:P' or 'aciq', got {clip!r}")
    if not 50.0 < float(percentile) <= 100.0:
        raise CodecError(f"clip percentile must be in (50, 100], got {percentile}")
    return float(percentile)


def clip_range(
    rows: np.ndarray, clip: float | str | None, bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Range ``[lo, hi]`` of every row of a 2-D float array.

    :param rows: ``[P, N]`` values (one row per channel, or a single row), finite, ``N >= 1``.
    :param clip: a parsed clip specification (:func:`parse_clip`).
    :param bits: bit-width of the quantizer, 1 to 8 (used by ``"aciq"``).
    :return: ``(lo, hi)`` arrays of length ``P`` with ``lo <= hi``.
    """
    lo = rows.min(axis=1)
    hi = rows.max(axis=1)
    if clip is None:
        return lo, hi
    one_sided = lo >= 0
    if clip == "aciq":
        above = rows > lo[:, None]
        mean_excess = np.sum((rows - lo[:, None]) * above, axis=1) / np.maximum(
            above.sum(axis=1), 1
        )
        centre = rows.mean(axis=1)
        spread = np.abs(rows - centre[:, None]).mean(axis=1)
        clip_lo = np.where(one_sided, lo, centre - ACIQ_TWO_SIDED[bits] * spread)
        clip_hi = np.where(
            one_sided,
            lo + ACIQ_ONE_SIDED[bits] * mean_excess,
            centre + ACIQ_TWO_SIDED[bits] * spread,
        )
    else:
        assert isinstance(clip, float)
        clip_hi = np.percentile(rows, clip, axis=1)
        clip_lo = np.where(one_sided, lo, np.percentile(rows, 100.0 - clip, axis=1))
    new_lo = np.clip(clip_lo, lo, hi)
    return new_lo, np.clip(clip_hi, new_lo, hi)
