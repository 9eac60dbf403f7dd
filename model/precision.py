"""Which floating-point precision the model runs in, and the one autocast helper that applies it.

``--precision auto|fp32|bf16`` (train, eval, predict, study) is resolved here and only here:

* ``fp32``: no autocast anywhere.
* ``bf16``: ``torch.autocast(<device>, torch.bfloat16)`` on CUDA or CPU (asked for explicitly,
  it is honoured even where it is slow; MPS is refused).
* ``auto``: bf16 on CUDA, and on a CPU whose bf16 matrix units pay for it: AMX-BF16 (Intel
  Sapphire Rapids and later, ``amx_bf16`` in /proc/cpuinfo). fp32 everywhere else.

Why AMX and not AVX512-BF16 alone: measured by ``bench/bench_precision.py``. On an AMX Xeon of
this project the default UNet's forward ran 1.5-2.4x faster under bf16 autocast; on a Xeon with
AVX512-BF16 but no AMX it ran about 0.5-0.7x (slower: oneDNN has no bf16 convolution kernel
there that beats its fp32 one, and autocast adds casts), and on a CPU without either about 0.5x.
So ``auto`` asks for the AMX tile unit. ``cpu_features`` and ``cpu_bf16_native`` are the only
places that look at the hardware (tests mock them).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    Device = torch.device | str  # a torch.device or its name ('cpu', 'cuda:1')

from lymph.data.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # the flags recorded beside the decision


def _cpuinfo_field(key: str) -> str:
    """The value of /proc/cpuinfo's first ``key`` line (its first CPU's), or "" (no such file
    or line: another OS)."""
    with contextlib.suppress(OSError):
        for line in CPUINFO.read_text(errors="replace").splitlines():
            if line.startswith(key):
                return line.split(":", 1)[-1].strip()
    return ""


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """This machine's CPU as a run records it: /proc/cpuinfo's model name and its bf16 flags
    (e.g. "AMD EPYC (avx512_bf16)"). Runs reproduce to the bit only on one CPU: oneDNN picks its
    kernels for the CPU it finds, and kernels round differently."""
    import platform

    name = _cpuinfo_field("model name")
    flags = ", ".join(sorted(cpu_features())) or "no bf16"
    return f"{name or platform.processor() or platform.machine() or 'unknown CPU'} ({flags})"


@functools.lru_cache(maxsize=1)
def cpu_features() -> frozenset[str]:
    """The bf16-related CPU flags this machine has: those of ``BF16_FLAGS`` that /proc/cpuinfo
    lists, plus ``amx_bf16`` when torch itself can initialise AMX tiles (other OSes)."""
    found = set(_cpuinfo_field("flags").split()) & set(BF16_FLAGS)
    try:
        import torch

        init_amx = getattr(torch._C._cpu, "_init_amx", None)
        if init_amx is not None and init_amx():
            found.add("amx_bf16")
    except Exception:  # noqa: BLE001 - a probe: no answer means no AMX
        pass
    return frozenset(found)


def cpu_bf16_native() -> bool:
    """True when this CPU has the bf16 units ``auto`` uses: AMX-BF16 (see the module doc)."""
    return "amx_bf16" in cpu_features()


def check_precision(precision: str) -> str:
    """``precision`` if it is one of PRECISIONS, else a ConfigError naming the choices."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision must be one of {PRECISIONS}, got {precision!r}; e.g. --precision auto"
        )
    return precision


def device_kind(device: Device) -> str:
    """'cpu', 'cuda', 'mps' of a torch.device or a name such as 'cuda:1'."""
    return str(getattr(device, "type", device)).split(":")[0]


def resolve_precision(precision: str, device: Device) -> str:
    """'fp32' or 'bf16': what ``precision`` means on ``device`` (a torch.device or its name;
    an unresolved 'auto' device counts as CPU)."""
    check_precision(precision)
    kind = device_kind(device)
    if precision == "bf16" and kind not in ("cpu", "cuda"):
        raise ConfigError(f"precision bf16 is not supported on device {kind!r}: use fp32 or auto")
    if precision != "auto":
        return precision
    if kind == "cuda":
        return "bf16"
    if kind == "cpu" and cpu_bf16_native():
        return "bf16"
    return "fp32"


def autocast(device: Device, precision: str) -> contextlib.AbstractContextManager[None]:
    """The autocast context of a *resolved* precision ('fp32' or 'bf16') on ``device``."""
    import torch

    if precision not in ("fp32", "bf16"):
        raise ValueError(f"autocast needs a resolved precision (fp32, bf16), got {precision!r}")
    kind = device_kind(device)
    if precision == "fp32" or kind not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=torch.bfloat16)


@contextlib.contextmanager
def run_in(device: Device, precision: str) -> Iterator[str]:
    """Resolve ``precision`` on ``device`` and run the block under its autocast; yields the
    resolved precision."""
    resolved = resolve_precision(precision, device)
    with autocast(device, resolved):
        yield resolved


def describe(precision: str, device: Device) -> dict[str, str | list[str]]:
    """What outputs record beside the precision asked for (which their config holds; eval's
    "precision" is the pixel metric): the one used, and the CPU's bf16 flags."""
    return {
        "precision_used": resolve_precision(precision, device),
        "cpu_bf16_flags": sorted(cpu_features()),
    }
