"""Markdown tables that summarize a profile: accuracy per exit, payload per split and bit option,
and the rate-accuracy trade-off of every split."""

from __future__ import annotations

from math import prod

import numpy as np

from splitrl.profiles.schema import Profile


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join([_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)])


def bits_per_element(profile: Profile) -> np.ndarray:
    """Mean coded bits per element of the sent tensor per ``(s, b)``, ``[S, B]`` (sent splits only)."""
    sizes = profile.mean_payload_bytes()[:-1]
    elements = np.array(
        [prod(profile.split_shape(s)) for s in range(profile.n_stages)], dtype=float
    )
    return 8.0 * sizes / elements[:, None]


def accuracy_drop(profile: Profile) -> np.ndarray:
    """Accuracy lost by coding, in points, per ``(s, b, e)`` against the unquantized exit; NaN where
    the exit is not reachable from ``s`` by sending (device-only pairs)."""
    drop = 100.0 * (profile.clean_accuracy()[None, None, :] - profile.accuracy())
    for e, k_e in enumerate(profile.exit_stages):
        drop[k_e:, :, e] = np.nan
    return drop


def lowest_lossless_rate(
    profile: Profile, tolerance_points: float = 1.0
) -> list[tuple[float, str]]:
    """Per sent split: the lowest bits per element whose final-exit accuracy drop is at most
    ``tolerance_points``, and the bit option that achieves it."""
    rates = bits_per_element(profile)
    drops = accuracy_drop(profile)[:, :, -1]
    result = []
    for s in range(profile.n_stages):
        ok = [b for b in range(profile.n_bit_options) if drops[s, b] <= tolerance_points]
        if not ok:
            result.append((float("nan"), "none"))
            continue
        best = min(ok, key=lambda b: rates[s, b])
        result.append((float(rates[s, best]), str(profile.bit_options[best])))
    return result


def profile_tables(profile: Profile) -> str:
    """All summary tables of ``profile`` as markdown."""
    options = [str(o) for o in profile.bit_options]
    clean = profile.clean_accuracy()
    exits = _table(
        ["exit", "after stage", "accuracy", "head MFLOPs", "MFLOPs to here"],
        [
            [
                str(e),
                str(info.after_stage),
                f"{100 * clean[e]:.2f}%",
                f"{info.flops / 1e6:.2f}",
                f"{(sum(s.flops for s in profile.stages[: info.after_stage]) + info.flops) / 1e6:.2f}",
            ]
            for e, info in enumerate(profile.exits)
        ],
    )
    sizes = profile.mean_payload_bytes()
    png = float(profile.input_png_bytes.mean())
    payload = _table(
        ["split", "tensor", *[f"{o} b" if o.isdigit() else o for o in options]],
        [
            [str(s), "x".join(map(str, profile.split_shape(s))), *[f"{v:.0f}" for v in sizes[s]]]
            for s in range(profile.n_stages)
        ],
    )
    rates = bits_per_element(profile)
    drops = accuracy_drop(profile)[:, :, -1]
    curve = _table(
        ["split", *[f"{o}: bits/elem, drop" for o in options]],
        [
            [
                str(s),
                *[f"{rates[s, b]:.3f}, {drops[s, b]:+.2f}" for b in range(profile.n_bit_options)],
            ]
            for s in range(profile.n_stages)
        ],
    )
    lowest = _table(
        ["split", "lowest bits/element at <= 1 point loss (final exit)", "bit option"],
        [
            [str(s), f"{rate:.3f}", option]
            for s, (rate, option) in enumerate(lowest_lossless_rate(profile))
        ],
    )
    return "\n\n".join(
        [
            f"## Profile `{profile.name}`: {profile.n_samples} samples",
            "### Accuracy per exit (unquantized)\n\n" + exits,
            f"### Mean payload bytes per split and bit option (mean PNG input: {png:.0f} bytes)\n\n"
            + payload,
            "### Rate-accuracy: bits per element and final-exit accuracy drop (points)\n\n" + curve,
            "### Lowest rate without accuracy loss\n\n" + lowest,
        ]
    )
