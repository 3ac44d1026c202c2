"""glibc malloc tunables for the renderer's large short-lived tensors: freed memory is kept and reused.

A render pass allocates and frees several GB of feature maps of up to a few hundred MB each. With glibc's
defaults, blocks that large are mmap'ed fresh and unmapped on free (in a worker thread's arena, anything over its
64 MB heap always is), so every pass pays a page fault and a zeroed page per 4 KB touched: ~20% of the renderer's
time on a 2-core machine in the service's worker threads. The tunables below make the second and later passes
reuse the same pages: one arena (the main heap, which can grow past 64 MB), blocks up to 1 GiB from the heap, no
trimming, and no per-thread cache of small chunks (torch's 64-byte-aligned allocations leave a small tail chunk
after each large block; cached, those tails never coalesce, which fragments the heap: measured 1.9 GB instead of
0.8 GB for a repeated 450 MB working set). The price: the process keeps its peak heap after a request.

glibc reads GLIBC_TUNABLES once, at process start, so an entry point calls `reexec_with_tunables()` first thing:
it restarts the interpreter with the same arguments and the tunables added (settings the user already put in
GLIBC_TUNABLES win). Nothing happens off glibc/Linux, with SADTALKER_MALLOC_TUNING=0, or when the device is CUDA
(the renderer's maps then live in GPU memory: `auto` counts as CUDA when an NVIDIA device node exists).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from typing import Mapping, Protocol

TUNABLES_ENV = "GLIBC_TUNABLES"
TUNABLES: tuple[tuple[str, int], ...] = (
    ("glibc.malloc.arena_max", 1),
    ("glibc.malloc.mmap_threshold", 1 << 30),
    ("glibc.malloc.trim_threshold", 1 << 40),
    ("glibc.malloc.tcache_count", 0),
)


class Wanted(Protocol):
    """What decides it (the service's settings, or the command line's): the switch and the device name."""

    malloc_tuning: bool
    device: str


def applies(wanted: Wanted) -> bool:
    """Whether the tuning applies: switched on, a CPU device, Linux with glibc."""
    return wanted.malloc_tuning and not _uses_cuda(wanted.device) and _on_glibc()


def _uses_cuda(device: str) -> bool:
    if device == "auto":
        return os.path.exists("/dev/nvidiactl")   # cheap: torch is not imported before the restart
    return device.startswith("cuda")


@functools.lru_cache(maxsize=None)
def _on_glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only (musl has no tunables)
    except (OSError, AttributeError):
        return False
    return True


def _parse(value: str) -> dict[str, str]:
    items = (part.split("=", 1) for part in value.split(":") if "=" in part)
    return {name: setting for name, setting in items}


def tuned_environment(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the tunables added to GLIBC_TUNABLES; names already set there keep their values."""
    current = env.get(TUNABLES_ENV, "")
    present = _parse(current)
    added = [f"{name}={value}" for name, value in TUNABLES if name not in present]
    out = dict(env)
    if added:
        out[TUNABLES_ENV] = ":".join(([current] if current else []) + added)
    return out


def is_tuned(env: Mapping[str, str]) -> bool:
    present = _parse(env.get(TUNABLES_ENV, ""))
    return all(name in present for name, _ in TUNABLES)


def child_environment(wanted: Wanted, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process that should run tuned (unchanged when the tuning does not apply)."""
    env = dict(os.environ if env is None else env)
    return tuned_environment(env) if applies(wanted) else env


def reexec_with_tunables(wanted: Wanted) -> None:
    """Restart this interpreter with the tunables set, unless they are set already or the tuning does not apply.

    Call it first thing in a program's `__main__` block, before threads start or large imports run (they are
    repeated after the restart). Does not return when it restarts.
    """
    if not applies(wanted) or is_tuned(os.environ):
        return
    argv = [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, tuned_environment(os.environ))
