"""The malloc tunables keep freed feature-map memory for reuse in worker threads (as in the model service) without
growing the heap, and entry points restart themselves with them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sadtalker.runtime import malloc_tuning
from sadtalker.service.settings import ServiceSettings

SRC = str(Path(__file__).resolve().parents[2] / "SadTalker")
MB = 2**20

# A worker thread allocates a 450 MB working set of three blocks (every page touched) and frees it, repeatedly.
PROBE = """
import json, resource, threading, torch
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
base = rss()
faults = []
def work():
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [torch.ones(n * 2**20 // 4) for n in (100, 150, 200)]
        del blocks
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=work); t.start(); t.join()
print(json.dumps({"faults": faults, "growth": rss() - base}))
"""

REEXEC = """
import json, os, sys
sys.path.insert(0, {src!r})
from sadtalker.runtime import malloc_tuning
from sadtalker.service.settings import ServiceSettings
print("START", flush=True)
malloc_tuning.reexec_with_tunables(ServiceSettings.from_env())
print(json.dumps({{"argv": sys.argv[1:], "tunables": os.environ.get("GLIBC_TUNABLES")}}))
"""

CPU = ServiceSettings(device="cpu")
linux_glibc = pytest.mark.skipif(not malloc_tuning.applies(CPU), reason="glibc tunables (Linux/glibc only)")


def _env(tuned: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != malloc_tuning.TUNABLES_ENV}
    return malloc_tuning.tuned_environment(env) if tuned else env


@linux_glibc
def test_freed_memory_is_reused_in_worker_threads_and_heap_stays_bounded():
    results = {}
    for tuned in (True, False):
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                             env=_env(tuned)).stdout
        results[tuned] = json.loads(out.strip().splitlines()[-1])
    working_set_pages = 450 * MB // 4096
    # glibc's defaults: every round maps and touches fresh pages
    assert min(results[False]["faults"][1:]) > working_set_pages // 2
    # tuned: once warm, the rounds reuse the heap
    assert max(results[True]["faults"][-4:]) < working_set_pages // 50
    # ... and the heap does not keep growing (at most 1.5x the working set is kept)
    assert results[True]["growth"] < 1.5 * 450 * MB


def test_user_settings_win_and_others_are_kept():
    env = {malloc_tuning.TUNABLES_ENV: "glibc.malloc.arena_max=4:glibc.pthread.rseq=0"}
    tuned = malloc_tuning.tuned_environment(env)[malloc_tuning.TUNABLES_ENV]
    parts = tuned.split(":")
    assert parts[:2] == ["glibc.malloc.arena_max=4", "glibc.pthread.rseq=0"]
    assert "glibc.malloc.tcache_count=0" in parts and len(parts) == 1 + len(malloc_tuning.TUNABLES)
    assert malloc_tuning.is_tuned({malloc_tuning.TUNABLES_ENV: tuned})
    assert not malloc_tuning.is_tuned(env)


def test_switched_off_or_on_cuda_nothing_changes():
    """SADTALKER_MALLOC_TUNING=0, or a CUDA device (the renderer's maps are in GPU memory): no tunables."""
    env = {"X": "1"}
    assert malloc_tuning.applies(ServiceSettings.from_env({"SADTALKER_MALLOC_TUNING": "0"})) is False
    assert malloc_tuning.child_environment(ServiceSettings(malloc_tuning=False), env) == env
    for device in ("cuda", "cuda:1"):
        assert malloc_tuning.applies(ServiceSettings(device=device)) is False
        assert malloc_tuning.child_environment(ServiceSettings(device=device), env) == env


@linux_glibc
def test_entry_point_restarts_once_with_the_same_arguments(tmp_path):
    script = tmp_path / "entry.py"
    script.write_text(REEXEC.format(src=SRC))
    out = subprocess.run([sys.executable, "-u", str(script), "--size", "256"], capture_output=True, text=True,
                         check=True, env=_env(False)).stdout
    assert out.count("START") == 2                      # ran, restarted once, did not loop
    result = json.loads(out.strip().splitlines()[-1])
    assert result["argv"] == ["--size", "256"]
    assert malloc_tuning.is_tuned({malloc_tuning.TUNABLES_ENV: result["tunables"]})

    off = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                         env={**_env(False), "SADTALKER_MALLOC_TUNING": "0"}).stdout
    assert off.count("START") == 1 and json.loads(off.strip().splitlines()[-1])["tunables"] is None
