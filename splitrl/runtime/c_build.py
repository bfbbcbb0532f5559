"""Build and run the C policy and the codec's encoder: on this host, and for an emulated Cortex-M7.

The checks of ``tests/test_c_export.py`` and ``benchmarks/bench_c_export.py`` use these helpers:
a shared library of the generated policy and of the codec core for :mod:`ctypes`, and a
firmware image for QEMU's ``mps2-an500`` board (Cortex-M7) that decides on fixed observations
and encodes a tensor (``csrc/cortex_m7/policy_check.c``), with its sizes and semihosting output.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: the codec's C core, compiled by the Python extension and the device library alike
CODEC_CORE = Path(__file__).resolve().parents[1] / "codecs" / "csrc"
CODEC_ENCODER = CODEC_CORE / "splitrl_codec.c"
CORTEX_M7 = Path(__file__).parent / "csrc" / "cortex_m7"
#: host flags of the checks: the generated code must compile without a warning
HOST_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-ffp-contract=off")
M7_FLAGS = (
    "-mcpu=cortex-m7",
    "-mfpu=fpv5-d16",
    "-mfloat-abi=hard",
    "-mthumb",
    "-Os",
    "-std=c99",
    "-ffp-contract=off",
    "-ffunction-sections",
    "-fdata-sections",
    "-Wall",
    "-Wextra",
    "-Werror",
)
ARM_GCC = "arm-none-eabi-gcc"
ARM_SIZE = "arm-none-eabi-size"
QEMU = "qemu-system-arm"


class ToolchainMissing(RuntimeError):
    """A compiler or emulator the build needs is not installed."""


def require(*tools: str) -> None:
    """Raise :class:`ToolchainMissing` naming the first tool not on ``PATH``."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise ToolchainMissing(
                f"{tool} not found (Debian: apt-get install gcc-arm-none-eabi "
                "libnewlib-arm-none-eabi qemu-system-arm)"
            )


def _run(command: list[str], timeout: float = 120.0) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:3])} ... failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    return result.stdout


def compile_host_library(
    sources: list[Path], output: Path, *, defines: tuple[str, ...] = ()
) -> ctypes.CDLL:
    """Compile C sources into a shared library with :data:`HOST_FLAGS` and load it."""
    require("gcc")
    includes = sorted({f"-I{source.parent}" for source in sources} | {f"-I{CODEC_CORE}"})
    command = ["gcc", *HOST_FLAGS, "-shared", "-fPIC", *defines, *includes]
    _run([*command, *map(str, sources), "-o", str(output), "-lm"])
    return ctypes.CDLL(str(output))


def stack_usage(
    sources: list[Path],
    directory: Path,
    flags: tuple[str, ...] = HOST_FLAGS,
    compiler: str = "gcc",
) -> dict[str, int]:
    """Bytes of stack of every function of ``sources`` (gcc's ``-fstack-usage``), by name.

    :param flags: compiler flags (:data:`M7_FLAGS` with ``compiler=ARM_GCC`` for the M7).
    """
    require(compiler)
    usage: dict[str, int] = {}
    for source in sources:
        target = directory / (source.stem + ".o")
        _run(
            [
                compiler,
                *flags,
                "-fstack-usage",
                f"-I{source.parent}",
                f"-I{CODEC_CORE}",
                "-c",
                str(source),
                "-o",
                str(target),
            ]
        )
        for line in target.with_suffix(".su").read_text().splitlines():
            location, size, _ = line.split("\t")
            usage[location.rsplit(":", 1)[-1]] = int(size)
    return usage


class HostPolicy:
    """The generated policy compiled on this host, called through :mod:`ctypes`.

    :param directory: the export directory with ``splitrl_policy.h`` / ``.c``.
    :param build: where the library goes.
    :param n_features: observation features.
    :param n_actions: flat actions.
    """

    def __init__(self, directory: Path, build: Path, n_features: int, n_actions: int) -> None:
        build.mkdir(parents=True, exist_ok=True)
        self.library = compile_host_library(
            [directory / "splitrl_policy.c"], build / "libsplitrl_policy.so"
        )
        self.n_features = n_features
        self.n_actions = n_actions
        self.library.splitrl_policy_act.restype = _Action
        self.library.splitrl_policy_decide.restype = _Action

    def act(self, observations: np.ndarray) -> np.ndarray:
        """Actions ``int64 [n, 3]`` of float32 observations ``[n, n_features]``."""
        batch = np.ascontiguousarray(observations, dtype=np.float32).reshape(-1, self.n_features)
        actions = np.empty((len(batch), 3), dtype=np.int64)
        pointer = ctypes.POINTER(ctypes.c_float)
        for index, row in enumerate(batch):
            action = self.library.splitrl_policy_act(row.ctypes.data_as(pointer))
            actions[index] = (action.exit, action.split, action.bits)
        return actions

    def gate_exits(self, action: tuple[int, int, int]) -> list[int]:
        """The early exits ``splitrl_policy_gate_exits`` lists for ``(exit, split, bits)``."""
        exits = (ctypes.c_int * max(1, int(action[0])))()
        count = self.library.splitrl_policy_gate_exits(_Action(*action), exits)
        return [int(exits[k]) for k in range(count)]

    def gate_stops(self, logits: np.ndarray) -> bool:
        """``splitrl_policy_gate_stops`` of one exit head's logits."""
        row = np.ascontiguousarray(logits, dtype=np.float32).reshape(-1)
        pointer = row.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        return bool(self.library.splitrl_policy_gate_stops(pointer, len(row)))

    def logits(self, observations: np.ndarray) -> np.ndarray:
        """Masked logits ``float32 [n, n_actions]`` of observations ``[n, n_features]``."""
        batch = np.ascontiguousarray(observations, dtype=np.float32).reshape(-1, self.n_features)
        logits = np.empty((len(batch), self.n_actions), dtype=np.float32)
        pointer = ctypes.POINTER(ctypes.c_float)
        for index, row in enumerate(batch):
            self.library.splitrl_policy_logits(
                row.ctypes.data_as(pointer), logits[index].ctypes.data_as(pointer)
            )
        return logits


class _Action(ctypes.Structure):
    _fields_ = [("exit", ctypes.c_int), ("split", ctypes.c_int), ("bits", ctypes.c_int)]


class HostEncoder:
    """The codec core's encoder compiled as a device would (C99, scalar path), via :mod:`ctypes`.

    :param build: where the library goes.
    """

    def __init__(self, build: Path) -> None:
        build.mkdir(parents=True, exist_ok=True)
        self.library = compile_host_library(
            [CODEC_ENCODER], build / "libsplitrl_codec.so", defines=("-DSPLITRL_CODEC_SCALAR",)
        )

    def encode(self, tensor: np.ndarray, bits: int) -> bytes:
        """The frame of a float32 tensor; raises ``ValueError`` with the core's status."""
        values = np.ascontiguousarray(tensor, dtype=np.float32)
        count = values.size
        shape = np.array(values.shape, dtype=np.uint32)
        words = 3 * (count // 3) + (3 * count + 8 + 3) // 4
        workspace = np.empty(words, dtype=np.uint32)
        frame = np.empty(11 + 4 * values.ndim + 16 + count, dtype=np.uint8)
        size = ctypes.c_size_t()
        status = self.library.splitrl_encode_float32_frame(
            values.ctypes.data_as(ctypes.c_void_p),
            shape.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_int(values.ndim),
            ctypes.c_int(bits),
            workspace.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_size_t(workspace.nbytes),
            frame.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_size_t(frame.nbytes),
            ctypes.byref(size),
        )
        if status != 0:
            raise ValueError(f"splitrl_encode_float32_frame returned status {status}")
        return frame[: size.value].tobytes()


def _c_floats(values: np.ndarray) -> str:
    return ", ".join(np.format_float_scientific(np.float32(v), unique=True) + "f" for v in values)


def write_check_vectors(
    path: Path,
    observations: np.ndarray,
    tensor: np.ndarray,
    gate_logits: np.ndarray | None = None,
) -> None:
    """``check_vectors.h`` of ``policy_check.c``: the observations to decide on, the tensor, and
    exit heads' logits ``[n, n_classes]`` for the confidence gate (``None``: one row of zeros)."""
    rows = ",\n    ".join(f"{{{_c_floats(row)}}}" for row in np.asarray(observations, np.float32))
    flat = np.asarray(tensor, np.float32).reshape(-1)
    shape = ", ".join(f"{d}u" for d in tensor.shape)
    heads = np.zeros((1, 1), np.float32) if gate_logits is None else np.asarray(gate_logits)
    heads = heads.astype(np.float32).reshape(len(heads), -1)
    head_rows = ",\n    ".join(f"{{{_c_floats(row)}}}" for row in heads)
    path.write_text(
        "/* Generated test vectors of policy_check.c. */\n"
        '#include "splitrl_policy.h"\n'
        "#include <stdint.h>\n"
        f"#define CHECK_N_OBSERVATIONS {len(observations)}\n"
        f"#define CHECK_NDIM {tensor.ndim}\n"
        f"#define CHECK_COUNT {flat.size}u\n"
        f"#define CHECK_N_GATE_LOGITS {len(heads)}\n"
        f"#define CHECK_N_CLASSES {heads.shape[1]}\n"
        "static const float check_observations[CHECK_N_OBSERVATIONS]"
        f"[SPLITRL_POLICY_N_FEATURES] = {{\n    {rows}\n}};\n"
        f"static const uint32_t check_shape[CHECK_NDIM] = {{{shape}}};\n"
        f"static const float check_tensor[CHECK_COUNT] = {{{_c_floats(flat)}}};\n"
        "static const float check_gate_logits[CHECK_N_GATE_LOGITS][CHECK_N_CLASSES] = "
        f"{{\n    {head_rows}\n}};\n"
    )


@dataclass(frozen=True)
class Sections:
    """Bytes of an object's sections, as ``arm-none-eabi-size`` reports them."""

    text: int
    data: int
    bss: int


def arm_sections(objects: list[Path]) -> Sections:
    """The summed text, data and bss of ARM object files."""
    require(ARM_SIZE)
    total = [0, 0, 0]
    for line in _run([ARM_SIZE, *map(str, objects)]).splitlines()[1:]:
        fields = line.split()
        for index in range(3):
            total[index] += int(fields[index])
    return Sections(*total)


def compile_cortex_m7(source: Path, output: Path, includes: list[Path]) -> Path:
    """One C file compiled for the Cortex-M7 with :data:`M7_FLAGS`."""
    require(ARM_GCC)
    _run([ARM_GCC, *M7_FLAGS, *(f"-I{p}" for p in includes), "-c", str(source), "-o", str(output)])
    return output


@dataclass(frozen=True)
class Firmware:
    """A firmware image of ``policy_check.c`` and the objects it was linked from."""

    elf: Path
    policy: Path
    encoder: Path


def build_check_firmware(policy_directory: Path, vectors: Path, build: Path) -> Firmware:
    """Compile the policy, the encoder and ``policy_check.c`` for the Cortex-M7 and link them.

    :param policy_directory: the export directory with ``splitrl_policy.h`` / ``.c``.
    :param vectors: the ``check_vectors.h`` of :func:`write_check_vectors`.
    :param build: where objects and ``policy_check.elf`` go.
    """
    require(ARM_GCC)
    build.mkdir(parents=True, exist_ok=True)
    includes = [policy_directory, CODEC_CORE, CORTEX_M7, vectors.parent]
    policy = compile_cortex_m7(policy_directory / "splitrl_policy.c", build / "policy.o", includes)
    encoder = compile_cortex_m7(CODEC_ENCODER, build / "encoder.o", includes)
    objects = [
        policy,
        encoder,
        compile_cortex_m7(CORTEX_M7 / "policy_check.c", build / "policy_check.o", includes),
        compile_cortex_m7(CORTEX_M7 / "startup.c", build / "startup.o", includes),
    ]
    elf = build / "policy_check.elf"
    _run(
        [
            ARM_GCC,
            *M7_FLAGS,
            "-nostartfiles",
            "--specs=nano.specs",
            "--specs=nosys.specs",
            f"-T{CORTEX_M7 / 'mps2_an500.ld'}",
            "-Wl,--gc-sections",
            *map(str, objects),
            "-lm",
            "-o",
            str(elf),
        ]
    )
    return Firmware(elf, policy, encoder)


def run_on_qemu(elf: Path, timeout: float = 120.0) -> str:
    """The semihosting output of a firmware image on QEMU's ``mps2-an500`` (Cortex-M7).

    ``-icount shift=0`` makes one instruction one nanosecond of emulated time, so that the
    SysTick counts the firmware prints measure instructions (QEMU is not cycle-accurate).
    """
    require(QEMU)
    output = elf.with_suffix(".out")
    output.unlink(missing_ok=True)
    _run(
        [
            QEMU,
            "-M",
            "mps2-an500",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "none",
            "-icount",
            "shift=0",
            "-chardev",
            f"file,id=semihosting,path={output}",
            "-semihosting-config",
            "enable=on,target=native,chardev=semihosting",
            "-kernel",
            str(elf),
        ],
        timeout=timeout,
    )
    return output.read_text()


@dataclass(frozen=True)
class CheckOutput:
    """What ``policy_check.c`` printed."""

    actions: np.ndarray
    frames: dict[int, bytes]
    ticks: dict[str, int]
    #: the early exits ``splitrl_policy_gate_exits`` listed, by ``(exit, split)``
    gate_exits: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    #: ``splitrl_policy_gate_stops`` of each row of the gate's logits
    gate_stops: list[bool] = field(default_factory=list)


def parse_check_output(text: str) -> CheckOutput:
    """The actions, frames, gate answers and SysTick counts of ``policy_check.c``'s output."""
    actions, frames, ticks = [], {}, {}
    gate_exits: dict[tuple[int, int], list[int]] = {}
    gate_stops: list[bool] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "action":
            actions.append([int(v) for v in fields[2:5]])
        elif fields[0] == "exits":
            gate_exits[int(fields[1]), int(fields[2])] = [int(v) for v in fields[3:]]
        elif fields[0] == "stops":
            gate_stops.append(fields[2] == "1")
        elif fields[0] == "frame":
            frames[int(fields[1])] = bytes.fromhex(fields[3])
            if len(frames[int(fields[1])]) != int(fields[2]):
                raise ValueError(f"frame line of {fields[2]} bytes is truncated")
        elif fields[0] == "ticks":
            ticks[fields[1]] = int(fields[2])
        else:
            raise ValueError(f"unexpected output of the firmware: {line!r}")
    return CheckOutput(
        np.array(actions, dtype=np.int64).reshape(-1, 3), frames, ticks, gate_exits, gate_stops
    )


def environment_has_cross_toolchain() -> bool:
    """Whether the Cortex-M7 compiler, its size tool and QEMU are installed."""
    return all(shutil.which(tool) for tool in (ARM_GCC, ARM_SIZE, QEMU))


#: matches ``SPLITRL_POLICY_STACK_BYTES N`` in the generated header
STACK_DEFINE = re.compile(r"#define SPLITRL_POLICY_STACK_BYTES (\d+)")


def documented_stack_bytes(header: Path) -> int:
    """The stack bound the generated header documents."""
    match = STACK_DEFINE.search(header.read_text())
    if match is None:
        raise ValueError(f"{header}: no SPLITRL_POLICY_STACK_BYTES")
    return int(match.group(1))


__all__ = [
    "CODEC_CORE",
    "CheckOutput",
    "Firmware",
    "HostEncoder",
    "HostPolicy",
    "Sections",
    "ToolchainMissing",
    "arm_sections",
    "build_check_firmware",
    "documented_stack_bytes",
    "environment_has_cross_toolchain",
    "parse_check_output",
    "run_on_qemu",
    "stack_usage",
    "write_check_vectors",
]
