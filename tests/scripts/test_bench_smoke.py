"""scripts/bench.py runs end to end on a tiny setting and prints its table (no timing assertions)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "scripts" / "bench.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_script", BENCH)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_prints_the_table_for_three_official_frames(official_checkpoints, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("UPSTREAM_PYTHON", "UPSTREAM_ROOT", "PARITY_DIR")}
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--configs", "256-crop", "--enhancer", "off", "--frames", "3",
         "--checkpoints", str(official_checkpoints.checkpoint_dir), "--gfpgan-weights",
         str(official_checkpoints.gfpgan_dir), "--json", str(out_json)],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    for field in ("== 256-crop", "frames 3", "load: renderer", "face (crop + 3DMM)", "motion (audio -> coeffs)",
                  "renderer network", "compose + encode", "total cold (with loading)", "total warm (models loaded)",
                  "renderer s/frame", "fps: cold", "RTF: cold", "peak RAM ours", "load average"):
        assert field in text, (field, text)
    assert "original s" not in text  # no upstream columns without UPSTREAM_PYTHON/UPSTREAM_ROOT
    import json

    result = json.loads(out_json.read_text())[0]
    stages = result["ours"]["stages"]
    assert result["ours"]["frames"] == 3
    assert stages["render_net"] > 0 and stages["load_render"] > 0 and stages["compose_encode"] > 0
    assert result["ours"]["peak_rss_mb"] > 100


def test_table_with_the_original_prints_ratios_and_marks_missing_stages() -> None:
    bench = _bench_module()
    ours = {"stages": {"load_render": 2.0, "inputs": 0.1, "render_net": 8.0, "compose_encode": 0.4,
                       "request_total": 8.5},
            "notes": ["face stage (sadtalker.engines.sadtalker.source_face) not available: ..."], "device": "cpu", "torch": "x",
            "threads": 2, "frames": 4, "peak_rss_mb": 1500.0}
    orig = {"stages": {"load_face": 1.0, "load_motion": 0.5, "load_render": 3.0, "face": 20.0, "motion": 2.0,
                       "render_net": 24.0, "compose_encode": 0.8, "request_total": 47.0},
            "frames": 4, "peak_rss_mb": 3000.0}
    table = bench.format_table("256-crop", ours, orig, 0.16)
    lines = {line.split("  ")[0].strip(): line for line in table.splitlines()}
    assert "not available" in lines["face (crop + 3DMM)"] and "20.00" in lines["face (crop + 3DMM)"]
    assert lines["renderer network"].rstrip().endswith("3.00x")        # 24 / 8
    assert lines["load: renderer"].rstrip().endswith("1.50x")          # 3 / 2
    assert lines["renderer s/frame"].rstrip().endswith("3.00x")        # 6 / 2 per frame
    # comparable: stages both ran (load_render, render_net, compose_encode) + our input reading
    assert lines["comparable cold s/frame"].split()[3:6] == ["2.62", "6.95", "2.65x"]
    assert "original 3000 MB" in table and "note: face stage" in table


def test_the_original_is_timed_only_when_its_environment_is_set(monkeypatch) -> None:
    bench = _bench_module()
    monkeypatch.setenv("UPSTREAM_PYTHON", "/nonexistent/python")
    monkeypatch.setenv("UPSTREAM_ROOT", "/nonexistent")
    assert bench.parse_args(["--frames", "2"]).upstream is True
    assert bench.parse_args(["--frames", "2", "--no-upstream"]).upstream is False
    monkeypatch.delenv("UPSTREAM_PYTHON")
    assert bench.parse_args([]).upstream is False


def _bench_ditto_module():
    spec = importlib.util.spec_from_file_location("bench_ditto_script", REPO / "scripts" / "bench_ditto.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_ditto_table_compares_the_stages_both_sides_ran() -> None:
    bench = _bench_ditto_module()
    ours = {"seconds": 2.0, "frames": 50, "steps": 10, "threads": 2, "load": 2.0, "peak_rss_mb": 1500.0,
            "cold": {"audio": 0.5, "source": 1.0, "motion": 5.0, "render": 6.0, "render_per_frame": 2.0,
                     "encode": 0.3, "rendered_frames": 3}}
    orig = {"seconds": 2.0, "frames": 50, "peak_rss_mb": 1800.0,
            "cold": {"load_source_nets": 1.0, "load_lmdm": 1.0, "load_render_nets": 2.0, "source": 0.5,
                     "motion": 10.0, "render": 9.0, "render_per_frame": 3.0, "rendered_frames": 3}}
    rows = {label: (a, b) for label, a, b in bench.stage_rows(ours, orig)}
    assert rows["load (all networks)"] == (2.0, 4.0)
    assert rows["cold: HuBERT features"] == (0.5, None)          # the original's HuBERT is stood in: not compared
    assert rows["cold: motion per frame"] == (0.1, 0.2)
    assert rows["cold: comparable total (with loading)"] == (2.0 + 1 + 5 + 6, 4.0 + 0.5 + 10 + 9)
    assert "warm: render per frame" not in rows                  # no warm pass was run
    table = bench.format_table(ours, orig).splitlines()
    render = next(line for line in table if line.startswith("cold: render per frame"))
    assert render.split()[-3:] == ["2.000", "3.000", "1.50x"]
    hubert = next(line for line in table if line.startswith("cold: HuBERT"))
    assert hubert.split()[-3:] == ["0.500", "-", "-"]
    alone = bench.format_table(ours, None)
    assert "1800MB" not in alone and all(line.split()[-1] == "-" for line in alone.splitlines()[2:-1])


def test_bench_hands_the_ditto_engine_to_its_own_script(monkeypatch) -> None:
    bench = _bench_module()
    seen = {}
    module = _bench_ditto_module()
    monkeypatch.setitem(sys.modules, "bench_ditto", module)
    monkeypatch.setattr(module, "main", lambda argv: seen.setdefault("argv", argv) and 0)
    assert bench.main(["--engine", "ditto", "--seconds", "1", "--warm"]) == 0
    assert seen["argv"] == ["--seconds", "1", "--warm"]
