"""scripts/gpu_check.py in its CPU quick mode, as a bare accelerator machine would run it: the packages such a machine
lacks (librosa, soundfile, gradio, scikit-image, PIL) are made unimportable, so an import of any of them fails here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HIDDEN = ("librosa", "soundfile", "gradio", "gradio_client", "skimage", "PIL", "imageio", "av")

RUNNER = """
import runpy, sys
for name in {hidden!r}:
    sys.modules[name] = None   # `import name` now raises ImportError
sys.argv = ["gpu_check.py", "--device", "cpu", "--quick", "--json", {out!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_quick_cpu_check_runs_without_the_media_packages(tmp_path):
    out = tmp_path / "check.json"
    code = RUNNER.format(hidden=HIDDEN, out=str(out), script=str(ROOT / "scripts" / "gpu_check.py"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| check | case | result |" in proc.stdout
    results = json.loads(out.read_text())["results"]
    # every section ran: frames of each path against CPU plain, speed, determinism, the other networks
    assert results["frames/cpu fast paths"]["float"]["max"] <= 2e-3
    assert results["frames/cpu fp32"]["float"]["max"] <= 2e-3
    assert any(key.startswith("speed/256 batch 2") for key in results)
    assert "determinism/two cpu runs" in results
    for network in ("3DMM (face_3drecon)", "RetinaFace", "audio2exp", "audio2pose"):
        assert results[f"networks/{network}"]["finite"], network
    # the Ditto section: its renderer's fast paths against plain fp32 at the parity tolerance, speed, LMDM, RTF
    assert results["ditto frames/cpu fast paths"]["max"] <= 2e-3 and results["ditto frames/cpu fast paths"]["finite"]
    assert results["ditto speed/512 fp32 batch 1"]["seconds_per_frame"] > 0
    assert results["ditto motion/LMDM clip, 10 steps, cpu"]["seconds"] > 0
    assert results["ditto RTF/512 fp32 (quick: steps scaled to 50)"]["rtf"] > 0


def test_no_cuda_is_a_clear_message_not_a_traceback():
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "no CUDA device here" in proc.stderr and "Traceback" not in proc.stderr
