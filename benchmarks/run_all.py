"""Run every benchmark (``make bench``), each in its own process; results land in ``results/``.

``python -m benchmarks.run_all codecs env`` runs a subset.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

BENCHMARKS = (
    "codecs",
    "env",
    "baselines",
    "policy",
    "runtime",
    "fidelity",
    "sweep",
    "traces",
    "channel_texture",
    "outage_risk",
    "hindsight_alignment",
    "gate_transfer",
)


def main(argv: list[str] | None = None) -> int:
    chosen = list(argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in chosen:
        if importlib.util.find_spec(f"benchmarks.bench_{name}") is None:
            print(f"\n=== bench_{name}: not present in this checkout, skipped ===", flush=True)
            continue
        print(f"\n=== bench_{name} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"benchmarks.bench_{name}"])
        print(
            f"=== bench_{name}: exit {code} in {time.perf_counter() - started:.0f} s ===",
            flush=True,
        )
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
