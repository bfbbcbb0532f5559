"""Bandwidth traces: the :class:`Trace` container and parsers for Mahimahi, Pensieve and CSV files.

Formats (see ``docs/channels.md``):

* **Mahimahi** (``*.up`` / ``*.down``): one line per opportunity to deliver one 1500-byte packet,
  the value being the millisecond (from the trace start) at which it occurs; several lines may
  share a millisecond. The last timestamp is the loop period. Opportunities are counted in bins of
  ``bin_s`` seconds to give rates.
* **Pensieve cooked**: two whitespace-separated columns ``time_s throughput_Mbps``; the value of
  row ``i`` holds over ``(t[i-1], t[i]]``, so the first row only marks the start.
* **CSV**: ``time_s,Mbps`` with an optional header line, same interval convention as Pensieve.

Limits, checked while a file is read and before anything of a trace's size is allocated, so that a
hostile or mistaken file fails at load in well under a second: files of at most
:data:`MAX_TRACE_FILE_BYTES`, at most :data:`MAX_TRACE_SEGMENTS` segments, segments of at least
:data:`MIN_SEGMENT_S` and rates of at most :data:`MAX_RATE_BPS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

TRACE_FORMATS = ("mahimahi", "pensieve", "csv")
MAHIMAHI_PACKET_BITS = 1500 * 8
#: most capacity segments of a trace (a Mahimahi file's bins, a table's rows)
MAX_TRACE_SEGMENTS = 1_000_000
#: shortest segment (time step) of a trace, in seconds: 1 us
MIN_SEGMENT_S = 1e-6
#: highest rate of a trace, in bit/s: 100 Gbit/s
MAX_RATE_BPS = 100e9
#: largest trace file read, in bytes
MAX_TRACE_FILE_BYTES = 64 * 1024 * 1024


class TraceFormatError(ValueError):
    """A trace file is malformed.

    :param path: the file
    :param line: 1-based line number of the problem, or ``None`` when it concerns the whole file
    :param problem: what is wrong
    """

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Trace:
    """A piecewise-constant capacity trace: ``rates_bps[k]`` holds over
    ``[boundaries_s[k], boundaries_s[k + 1])``. Channels replay it in a loop.

    :param boundaries_s: segment boundaries in seconds, strictly increasing from 0.0; one more
        entry than ``rates_bps``, the last being the trace duration
    :param rates_bps: capacity of each segment in bit/s (non-negative, not all zero)
    :param name: a label, by default the file name
    :param source_format: the format it was parsed from (``"memory"`` when built in code)
    """

    boundaries_s: tuple[float, ...]
    rates_bps: tuple[float, ...]
    name: str = "trace"
    source_format: str = "memory"

    def __post_init__(self) -> None:
        boundaries = tuple(float(b) for b in self.boundaries_s)
        rates = tuple(float(r) for r in self.rates_bps)
        if len(rates) < 1 or len(boundaries) != len(rates) + 1:
            raise ValueError(
                f"trace {self.name!r}: needs at least one segment and exactly one more boundary "
                f"than rates, got {len(boundaries)} boundaries and {len(rates)} rates"
            )
        if boundaries[0] != 0.0:
            raise ValueError(f"trace {self.name!r}: boundaries must start at 0.0")
        if not all(b1 > b0 for b0, b1 in pairwise(boundaries)):
            raise ValueError(f"trace {self.name!r}: boundaries must be strictly increasing")
        if not all(math.isfinite(b) for b in boundaries):
            raise ValueError(f"trace {self.name!r}: boundaries must be finite")
        if len(rates) > MAX_TRACE_SEGMENTS:
            raise ValueError(
                f"trace {self.name!r}: {len(rates)} segments, above the limit of "
                f"{MAX_TRACE_SEGMENTS}"
            )
        shortest = min(b1 - b0 for b0, b1 in pairwise(boundaries))
        if shortest < MIN_SEGMENT_S * (1 - 1e-9):
            raise ValueError(
                f"trace {self.name!r}: a segment of {shortest:g} s, shorter than the "
                f"{MIN_SEGMENT_S:g} s limit"
            )
        if not all(math.isfinite(r) and r >= 0.0 for r in rates):
            raise ValueError(f"trace {self.name!r}: rates must be finite and non-negative")
        if max(rates) > MAX_RATE_BPS:
            raise ValueError(
                f"trace {self.name!r}: a rate of {max(rates):g} bit/s, above the limit of "
                f"{MAX_RATE_BPS:g} bit/s"
            )
        if not any(r > 0.0 for r in rates):
            raise ValueError(f"trace {self.name!r}: all rates are zero")
        object.__setattr__(self, "boundaries_s", boundaries)
        object.__setattr__(self, "rates_bps", rates)

    @classmethod
    def from_rates(cls, rates_bps: Sequence[float], slot_s: float, name: str = "trace") -> Trace:
        """Build a trace of equal-length slots.

        :param rates_bps: capacity of each slot in bit/s
        :param slot_s: slot length in seconds
        :param name: a label
        """
        if not slot_s > 0.0:
            raise ValueError(f"slot_s must be positive, got {slot_s}")
        boundaries = tuple(k * float(slot_s) for k in range(len(rates_bps) + 1))
        return cls(boundaries, tuple(rates_bps), name=name)

    @property
    def duration_s(self) -> float:
        """Length of one loop of the trace in seconds."""
        return self.boundaries_s[-1]

    @property
    def durations_s(self) -> tuple[float, ...]:
        """Length of each segment in seconds."""
        b = self.boundaries_s
        return tuple(b1 - b0 for b0, b1 in pairwise(b))

    @property
    def mean_rate_bps(self) -> float:
        """Time-averaged capacity over one loop in bit/s."""
        bits = sum(r * d for r, d in zip(self.rates_bps, self.durations_s, strict=True))
        return bits / self.duration_s

    def __repr__(self) -> str:
        return (
            f"Trace(name={self.name!r}, format={self.source_format!r}, "
            f"segments={len(self.rates_bps)}, duration_s={self.duration_s:g}, "
            f"mean_rate_bps={self.mean_rate_bps:.4g})"
        )


def _read_lines(path: Path) -> list[str]:
    if path.is_dir():
        raise TraceFormatError(path, None, "a directory, not a trace file")
    if not path.exists():
        raise FileNotFoundError(f"trace file {path} not found")
    size = path.stat().st_size
    if size > MAX_TRACE_FILE_BYTES:
        raise TraceFormatError(
            path, None, f"{size} bytes, above the limit of {MAX_TRACE_FILE_BYTES} for a trace file"
        )
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise TraceFormatError(path, None, f"not a UTF-8 text file ({error.reason})") from None


def parse_mahimahi(path: str | Path, *, bin_s: float = 0.1, name: str | None = None) -> Trace:
    """Parse a Mahimahi packet-delivery trace.

    Each line is one opportunity to send a 1500-byte packet at the given millisecond; the rate
    of a bin is ``opportunities x 12000 bit / bin length``. The last timestamp is the loop
    period, so the trace lasts ``last_ms / 1000`` seconds (the last bin may be shorter).

    :param path: the trace file
    :param bin_s: bin length in seconds
    :param name: a label (default: the file name)
    :raises TraceFormatError: empty file, non-integer, negative or decreasing timestamps
    """
    if not (math.isfinite(bin_s) and bin_s >= MIN_SEGMENT_S):
        raise ValueError(f"bin_s must be at least {MIN_SEGMENT_S:g} s, got {bin_s}")
    path = Path(path)
    stamps: list[int] = []
    last_line = 0
    for line_no, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1:
            raise TraceFormatError(
                path, line_no, f"expected one millisecond timestamp, got {len(fields)} columns"
            )
        try:
            stamp = int(fields[0])
        except ValueError:
            raise TraceFormatError(
                path, line_no, f"expected an integer millisecond timestamp, got {fields[0]!r}"
            ) from None
        if stamp < 0:
            raise TraceFormatError(path, line_no, f"negative timestamp {stamp} ms")
        if stamps and stamp < stamps[-1]:
            raise TraceFormatError(
                path, line_no, f"timestamp {stamp} ms is before the previous one ({stamps[-1]} ms)"
            )
        stamps.append(stamp)
        last_line = line_no
    if not stamps:
        raise TraceFormatError(path, None, "no timestamps (empty file)")
    period_ms = stamps[-1]
    if period_ms == 0:
        raise TraceFormatError(
            path, last_line, "the last timestamp is 0 ms, so the trace has no duration"
        )
    duration_s = period_ms / 1000.0
    # The slack keeps a rounding error in duration_s / bin_s from adding an empty last bin.
    n_bins = max(1, math.ceil(duration_s / bin_s - 1e-6))
    if n_bins > MAX_TRACE_SEGMENTS:
        raise TraceFormatError(
            path,
            last_line,
            f"the trace lasts {duration_s:g} s: {n_bins} bins of {bin_s:g} s, above the limit "
            f"of {MAX_TRACE_SEGMENTS} segments",
        )
    bins = np.minimum(np.floor(np.asarray(stamps) / (1000.0 * bin_s)), n_bins - 1)
    counts = np.bincount(bins.astype(np.int64), minlength=n_bins)
    boundaries = [min(k * bin_s, duration_s) for k in range(n_bins)] + [duration_s]
    widths = np.diff(boundaries)
    rates = counts * MAHIMAHI_PACKET_BITS / widths
    return Trace(tuple(boundaries), tuple(rates.tolist()), name or path.name, "mahimahi")


def _parse_time_rate_table(path: Path, fmt: str, name: str | None) -> Trace:
    csv = fmt == "csv"
    times: list[float] = []
    mbps: list[float] = []
    first_content_line = True
    for line_no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")] if csv else line.split()
        is_header_candidate = csv and first_content_line
        first_content_line = False
        if len(fields) != 2:
            raise TraceFormatError(
                path, line_no, f"expected 2 columns (time_s, Mbps), got {len(fields)}"
            )
        try:
            t, rate = float(fields[0]), float(fields[1])
        except ValueError:
            if is_header_candidate:
                continue
            raise TraceFormatError(
                path, line_no, f"non-numeric value in {fields!r}; expected time_s and Mbps"
            ) from None
        if not (math.isfinite(t) and math.isfinite(rate)):
            raise TraceFormatError(path, line_no, f"non-finite value in {fields!r}")
        if rate < 0.0:
            raise TraceFormatError(path, line_no, f"negative rate {rate} Mbps")
        if rate * 1e6 > MAX_RATE_BPS:
            raise TraceFormatError(
                path,
                line_no,
                f"rate {rate:g} Mbps is above the limit of {MAX_RATE_BPS / 1e6:g} Mbps",
            )
        if times and t <= times[-1]:
            raise TraceFormatError(
                path, line_no, f"time {t} s does not increase (previous row: {times[-1]} s)"
            )
        if times and t - times[-1] < MIN_SEGMENT_S:
            raise TraceFormatError(
                path,
                line_no,
                f"time step of {t - times[-1]:g} s after the previous row is shorter than the "
                f"{MIN_SEGMENT_S:g} s limit",
            )
        if len(times) > MAX_TRACE_SEGMENTS:
            raise TraceFormatError(
                path, line_no, f"more than {MAX_TRACE_SEGMENTS} segments, the limit of a trace"
            )
        times.append(t)
        mbps.append(rate)
    if len(times) < 2:
        raise TraceFormatError(
            path,
            None,
            f"needs at least two data rows (the first marks the start), got {len(times)}",
        )
    if not any(rate > 0.0 for rate in mbps[1:]):
        raise TraceFormatError(path, None, "all rates are zero: the trace never delivers a bit")
    boundaries = tuple(t - times[0] for t in times)
    rates = tuple(rate * 1e6 for rate in mbps[1:])
    return Trace(boundaries, rates, name or path.name, fmt)


def parse_pensieve(path: str | Path, *, name: str | None = None) -> Trace:
    """Parse a Pensieve cooked trace (``time_s throughput_Mbps`` per line).

    The value of row ``i`` holds over ``(t[i-1], t[i]]``; times are taken relative to the first
    row, whose own value is not used.

    :param path: the trace file
    :param name: a label (default: the file name)
    :raises TraceFormatError: fewer than two rows, wrong column count, non-numeric or negative
        values, non-increasing time, all rates zero
    """
    return _parse_time_rate_table(Path(path), "pensieve", name)


def parse_csv(path: str | Path, *, name: str | None = None) -> Trace:
    """Parse a ``time_s,Mbps`` CSV trace with an optional header line.

    Same convention as Pensieve: the value of row ``i`` holds over ``(t[i-1], t[i]]``.

    :param path: the trace file
    :param name: a label (default: the file name)
    :raises TraceFormatError: as :func:`parse_pensieve`
    """
    return _parse_time_rate_table(Path(path), "csv", name)


def detect_format(path: str | Path) -> str:
    """Guess a trace file's format from its extension, else from its first non-blank line.

    ``.up`` / ``.down`` are Mahimahi and ``.csv`` is CSV; otherwise a line with a comma is CSV,
    one column is Mahimahi and two whitespace-separated columns are Pensieve.

    :param path: the trace file
    :return: one of :data:`TRACE_FORMATS`
    :raises TraceFormatError: the first line fits none of them, or the file is empty
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".up", ".down"):
        return "mahimahi"
    if suffix == ".csv":
        return "csv"
    for line_no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        if "," in line:
            return "csv"
        n_columns = len(line.split())
        if n_columns == 1:
            return "mahimahi"
        if n_columns == 2:
            return "pensieve"
        raise TraceFormatError(
            path, line_no, f"cannot detect the trace format from a line with {n_columns} columns"
        )
    raise TraceFormatError(path, None, "empty file")


def load_trace(path: str | Path, format: str | None = None, *, bin_s: float = 0.1) -> Trace:
    """Load a trace file.

    :param path: the trace file
    :param format: one of :data:`TRACE_FORMATS`, or ``None`` to detect it (:func:`detect_format`)
    :param bin_s: bin length in seconds for Mahimahi traces
    :raises TraceFormatError: the file is malformed
    :raises ValueError: unknown format name
    """
    if format is None:
        format = detect_format(path)
    if format == "mahimahi":
        return parse_mahimahi(path, bin_s=bin_s)
    if format == "pensieve":
        return parse_pensieve(path)
    if format == "csv":
        return parse_csv(path)
    raise ValueError(f"unknown trace format {format!r}; expected one of {', '.join(TRACE_FORMATS)}")
