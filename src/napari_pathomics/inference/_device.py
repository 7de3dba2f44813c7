"""Device, precision and thread choices for inference: the fastest settings that stay correct.

``auto`` picks CUDA, then MPS, then CPU. Mixed precision is never assumed: on the CPU bf16
autocast is used only when oneDNN supports bf16 on this CPU *and* a one-off probe shows the
model's probabilities agree with fp32 (``AMP_PROB_TOL``) and that it is actually faster. The
probe's verdict is cached per (architecture, device) for the process.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from ..errors import InferenceError

__all__ = [
    "select_device",
    "default_num_threads",
    "configure_threads",
    "AmpChoice",
    "choose_amp",
    "tune_allocator",
    "autocast",
    "AMP_PROB_TOL",
]

#: Largest |Δprob| between fp32 and reduced precision accepted by the probe (tests use it too).
AMP_PROB_TOL = 0.02

_AMP_CACHE: dict[tuple[str, str, int], "AmpChoice"] = {}


def select_device(device: str = "auto") -> "Any":
    """A ``torch.device`` for ``auto|cpu|cuda[:i]|mps``; InferenceError if the one asked is absent."""
    import torch  # heavy

    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InferenceError("device 'cuda' requested but no CUDA GPU is available (use --device cpu or auto)")
        return torch.device(name)
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InferenceError("device 'mps' requested but Apple MPS is not available (use --device cpu or auto)")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise InferenceError(f"unknown device {device!r}: use auto, cpu, cuda or mps")


def default_num_threads() -> int:
    """Cores this process may use (affinity-aware), which is what torch should use for compute."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


def configure_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads (process-wide) and return the number used."""
    import torch  # heavy

    n = int(num_threads) if num_threads else default_num_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@dataclass(frozen=True)
class AmpChoice:
    """The precision used on a device and why (recorded in run.json)."""

    dtype: Any  # torch.dtype or None for fp32
    reason: str
    max_prob_diff: float | None = None
    speedup: float | None = None

    @property
    def name(self) -> str:
        return "fp32" if self.dtype is None else str(self.dtype).replace("torch.", "")


def autocast(device: Any, dtype: Any) -> AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device`` or a no-op for fp32."""
    import torch  # heavy

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _cpu_bf16_native() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively ."""
    import torch  # heavy

    cpu = getattr(torch, "cpu", None)
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, name, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:  # pragma: no cover
            pass
    return False


def _cpu_bf16_supported() -> bool:
    import torch  # heavy

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - very old torch
        return "AVX512" in str(torch.backends.cpu.get_cpu_capability())


def choose_amp(
    model: Any, device: Any, input_size: int, amp: str = "auto", arch: str = "", probe_batch: int = 4
) -> AmpChoice:
    """Pick the autocast dtype: ``amp`` is ``auto``, ``fp32``/``off``, ``bf16`` or ``fp16``.

    ``auto`` probes once: fp32 vs candidate on a fixed random batch (agreement within
    ``AMP_PROB_TOL``). On a CPU with native bf16 (AVX512-BF16/AMX) agreement is enough; where
    oneDNN would emulate bf16 the probe also times both and keeps bf16 only if it is faster.
    (Timing is not used on native-bf16 CPUs: on a shared, loaded machine it is too noisy to
    trust and wrongly picked fp32.)
    """
    import torch  # heavy

    a = (amp or "auto").lower()
    if a in ("fp32", "off", "none", "false"):
        return AmpChoice(None, "fp32 requested")
    if a in ("bf16", "bfloat16"):
        return AmpChoice(torch.bfloat16, "bf16 requested")
    if a in ("fp16", "float16", "half"):
        if device.type == "cpu":
            raise InferenceError("fp16 autocast is not supported on the CPU; use bf16 or fp32")
        return AmpChoice(torch.float16, "fp16 requested")
    if a != "auto":
        raise InferenceError(f"unknown amp setting {amp!r}: use auto, fp32, bf16 or fp16")

    key = (arch or type(model).__name__, str(device), int(input_size))
    if key in _AMP_CACHE:
        return _AMP_CACHE[key]
    if device.type == "cpu":
        if not _cpu_bf16_supported():
            choice = AmpChoice(None, "CPU without bf16 support (oneDNN)")
            _AMP_CACHE[key] = choice
            return choice
        cand = torch.bfloat16
    elif device.type == "cuda":
        cand = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:  # mps
        cand = torch.float16
    timed = device.type == "cpu" and not _cpu_bf16_native()
    choice = _probe(model, device, input_size, cand, probe_batch, timed)
    _AMP_CACHE[key] = choice
    return choice


def _probe(model: Any, device: Any, input_size: int, cand: Any, batch: int, timed: bool) -> AmpChoice:
    import torch  # heavy

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, input_size, input_size, generator=g).to(device)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)

    def run(dtype: Any, reps: int) -> tuple[Any, float]:
        best = float("inf")
        out = None
        with torch.inference_mode(), autocast(device, dtype):
            for _ in range(reps):
                t = time.perf_counter()
                out = torch.softmax(model(x).float(), dim=1)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t)
        return out, best

    reps = 2 if timed else 1
    try:
        if timed:
            run(None, 1)
        p32, t32 = run(None, reps)
        if timed:
            run(cand, 1)
        pc, tc = run(cand, reps)
    except RuntimeError as exc:  # an op without a reduced-precision kernel
        return AmpChoice(None, f"{cand} failed in probe ({str(exc).splitlines()[0][:120]})")
    diff = float((p32 - pc).abs().max())
    speed = t32 / tc if tc > 0 else None
    name = str(cand).replace("torch.", "")
    if not diff <= AMP_PROB_TOL:
        return AmpChoice(None, f"{name} disagrees with fp32 (max |Δp| {diff:.3g})", diff, speed)
    if timed and speed is not None and speed < 1.05:
        return AmpChoice(None, f"{name} not faster than fp32 here ({speed:.2f}x)", diff, speed)
    if not timed:
        return AmpChoice(cand, f"{name} autocast (native on this {device.type}): max |Δp| {diff:.2g} vs fp32", diff)
    return AmpChoice(cand, f"{name} autocast: max |Δp| {diff:.2g} vs fp32, {speed:.2f}x faster", diff, speed)


_ALLOCATOR_TUNED = False


def tune_allocator(mmap_threshold: int = 256 << 20, trim_threshold: int = 512 << 20, top_pad: int = 64 << 20) -> bool:
    """Stop glibc from handing every batch's big tensors back to the OS (Linux/glibc only).

    glibc serves large allocations with fresh mmaps and trims its heap eagerly, so every batch's
    activations and tile arrays would page-fault in anew; the raised thresholds keep up to
    ``trim_threshold`` of freed memory in the process. Threads created afterwards share the main
    heap (a thread's own arena is too small for a batch). Process-wide, idempotent; returns
    whether it applied. The measurements behind it are in docs/architecture.md.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold, m_arena_max = -1, -2, -3, -8
    ok = all(
        mallopt(p, v) == 1
        for p, v in (
            (m_mmap_threshold, mmap_threshold),
            (m_trim_threshold, trim_threshold),
            (m_top_pad, top_pad),
            (m_arena_max, 1),
        )
    )
    _ALLOCATOR_TUNED = ok
    return ok
