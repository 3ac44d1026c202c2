"""scripts/download_models.sh against loopback HTTP servers serving small stand-in files."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "download_models.sh"
pytestmark = pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None,
                                reason="download_models.sh needs bash and curl")


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single byte-range support (what curl's resume asks for); records each request."""

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Range")))  # type: ignore[attr-defined]
        path = Path(self.translate_path(self.path))
        rng = self.headers.get("Range")
        if not path.is_file() or not rng:
            return super().do_GET()
        data = path.read_bytes()
        start = int(rng.split("=")[1].split("-")[0])
        if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def servers(tmp_path):
    """Two loopback servers: 'primary' and 'mirror', each serving its own folder."""
    started = {}
    for name in ("primary", "mirror"):
        root = tmp_path / name
        root.mkdir()
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
        server.requests = []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started[name] = (server, root, f"http://127.0.0.1:{server.server_address[1]}")
    yield started
    for server, _, _ in started.values():
        server.shutdown()
        server.server_close()


def _standins(root: Path) -> dict[str, bytes]:
    files = {"SadTalker_V0.0.2_256.safetensors": os.urandom(300_000), "mapping_00229-model.pth.tar": os.urandom(5000),
             "GFPGANv1.4.pth": os.urandom(7000)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def _manifest(path: Path, files: dict[str, bytes], record: bool = True) -> Path:
    lines = []
    for name, data in files.items():
        where = "gfpgan" if name.startswith("GFPGAN") else "checkpoints"
        size, sha = (len(data), hashlib.sha256(data).hexdigest()) if record else ("-", "-")
        lines.append(f"{where} {name} https://invalid.example/{name} {size} {sha}")
    path.write_text("# stand-ins\n" + "\n".join(lines) + "\n")
    return path


def _run(tmp_path: Path, servers, manifest: Path, *names: str, primary: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "SADTALKER_CHECKPOINTS": str(tmp_path / "out" / "checkpoints"),
           "SADTALKER_GFPGAN_WEIGHTS": str(tmp_path / "out" / "gfpgan"), "SADTALKER_MANIFEST": str(manifest),
           "SADTALKER_MIRROR_BASE": servers["mirror"][2], "SADTALKER_CURL_OPTS": "--retry 0"}
    if primary:
        env["SADTALKER_DOWNLOAD_BASE"] = servers["primary"][2]
    return subprocess.run(["bash", str(SCRIPT), *names], env=env, capture_output=True, text=True, timeout=60)


def _dest(tmp_path: Path, name: str) -> Path:
    return tmp_path / "out" / ("gfpgan" if name.startswith("GFPGAN") else "checkpoints") / name


def test_downloads_verifies_and_skips_present(tmp_path, servers):
    files = _standins(servers["primary"][1])
    manifest = _manifest(tmp_path / "manifest.txt", files)
    first = _run(tmp_path, servers, manifest)
    assert first.returncode == 0, first.stderr
    for name, data in files.items():
        assert _dest(tmp_path, name).read_bytes() == data
        assert not _dest(tmp_path, name).with_name(name + ".part").exists()
    assert len(servers["primary"][0].requests) == 3 and not servers["mirror"][0].requests
    second = _run(tmp_path, servers, manifest)
    assert second.returncode == 0 and second.stderr.count("present:") == 3
    assert len(servers["primary"][0].requests) == 3  # nothing fetched again


def test_resumes_a_partial_download(tmp_path, servers):
    files = _standins(servers["primary"][1])
    name = "SadTalker_V0.0.2_256.safetensors"
    part = _dest(tmp_path, name).with_name(name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(files[name][:123_456])
    result = _run(tmp_path, servers, _manifest(tmp_path / "m.txt", files), name)
    assert result.returncode == 0, result.stderr
    assert _dest(tmp_path, name).read_bytes() == files[name]
    assert servers["primary"][0].requests == [(f"/{name}", "bytes=123456-")]


def test_falls_back_to_mirror_on_missing_or_corrupt_file(tmp_path, servers):
    good = _standins(servers["mirror"][1])
    (servers["primary"][1] / "GFPGANv1.4.pth").write_bytes(b"x" * len(good["GFPGANv1.4.pth"]))  # corrupt, same size
    result = _run(tmp_path, servers, _manifest(tmp_path / "m.txt", good))  # the other two: 404 on primary
    assert result.returncode == 0, result.stderr
    assert "sha256 mismatch: GFPGANv1.4.pth.part" in result.stderr
    for name, data in good.items():
        assert _dest(tmp_path, name).read_bytes() == data
    assert len(servers["mirror"][0].requests) == 3


def test_fails_loudly_when_no_source_has_the_right_file(tmp_path, servers):
    files = _standins(servers["primary"][1])
    _standins(servers["mirror"][1])
    wrong = dict(files, **{"mapping_00229-model.pth.tar": b"something else"})
    result = _run(tmp_path, servers, _manifest(tmp_path / "m.txt", wrong), "mapping_00229-model.pth.tar")
    assert result.returncode != 0
    assert "could not download mapping_00229-model.pth.tar" in result.stderr
    assert not _dest(tmp_path, "mapping_00229-model.pth.tar").exists()


def test_replaces_a_present_but_wrong_file_and_reports_unrecorded_hashes(tmp_path, servers):
    files = _standins(servers["primary"][1])
    name = "mapping_00229-model.pth.tar"
    dest = _dest(tmp_path, name)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"truncated")
    result = _run(tmp_path, servers, _manifest(tmp_path / "m.txt", files), name)
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == files[name]
    unrecorded = _run(tmp_path, servers, _manifest(tmp_path / "u.txt", files, record=False), "GFPGANv1.4.pth")
    assert unrecorded.returncode == 0, unrecorded.stderr
    assert hashlib.sha256(files["GFPGANv1.4.pth"]).hexdigest() in unrecorded.stderr


def test_recorded_manifest_lists_the_official_files():
    result = subprocess.run(["bash", str(SCRIPT), "--list"], capture_output=True, text=True, timeout=30,
                            env={k: v for k, v in os.environ.items() if not k.startswith("SADTALKER_")})
    assert result.returncode == 0, result.stderr
    names = {Path(line.split()[0]).name for line in result.stdout.splitlines()}
    assert names == {"SadTalker_V0.0.2_256.safetensors", "SadTalker_V0.0.2_512.safetensors",
                     "mapping_00109-model.pth.tar", "mapping_00229-model.pth.tar", "GFPGANv1.4.pth",
                     "detection_Resnet50_Final.pth", "alignment_WFLW_4HG.pth", "parsing_parsenet.pth"}
    assert "releases/download/v0.0.2-rc/SadTalker_V0.0.2_256.safetensors" in result.stdout


DITTO_FILES = ("ditto_pytorch/models/appearance_extractor.pth", "ditto_pytorch/models/motion_extractor.pth",
               "ditto_pytorch/models/warp_network.pth", "ditto_pytorch/models/decoder.pth",
               "ditto_pytorch/models/stitch_network.pth", "ditto_pytorch/models/lmdm_v0.4_hubert.pth",
               "ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx", "ditto_cfg/v0.4_hubert_cfg_pytorch.pkl")


def test_ditto_lists_the_release_files_from_hugging_face():
    result = subprocess.run(["bash", str(SCRIPT), "--list", "--ditto"], capture_output=True, text=True, timeout=30,
                            env={k: v for k, v in os.environ.items() if not k.startswith("SADTALKER_")})
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert sorted(Path(dest).relative_to(ROOT / "checkpoints" / "ditto").as_posix() for dest, *_ in rows) == \
        sorted(DITTO_FILES)
    assert all(url.startswith("https://huggingface.co/digital-avatar/ditto-talkinghead/resolve/main/") for _, url, *_
               in rows)
    # the engine's loader looks for the same files in the same layout
    from sadtalker.engines.ditto.weights import DittoCheckpoints

    expected = {p.relative_to(DittoCheckpoints().root).as_posix() for p in DittoCheckpoints().required_files()}
    assert expected == set(DITTO_FILES)


def test_ditto_downloads_the_release_layout_from_one_source(tmp_path, servers):
    """--ditto fetches only the Ditto files, into their sub-folders of SADTALKER_DITTO_CHECKPOINTS; a missing file
    fails loudly (no SadTalker mirror is tried for it)."""
    _, root, url = servers["primary"]
    files = {name: os.urandom(2000 + i) for i, name in enumerate(DITTO_FILES)}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    env = {**os.environ, "SADTALKER_DITTO_CHECKPOINTS": str(tmp_path / "ditto"),
           "SADTALKER_CHECKPOINTS": str(tmp_path / "sadtalker"), "SADTALKER_DOWNLOAD_BASE": url,
           "SADTALKER_MIRROR_BASE": servers["mirror"][2]}
    env.pop("SADTALKER_MANIFEST", None)
    result = subprocess.run(["bash", str(SCRIPT), "--ditto"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for name, data in files.items():
        assert (tmp_path / "ditto" / name).read_bytes() == data
    assert not (tmp_path / "sadtalker").exists()
    assert not servers["mirror"][0].requests
    from sadtalker.engines.ditto.weights import DittoCheckpoints

    assert DittoCheckpoints(root=tmp_path / "ditto").missing_files() == []

    (root / DITTO_FILES[0]).unlink()
    (tmp_path / "ditto" / DITTO_FILES[0]).unlink()
    again = subprocess.run(["bash", str(SCRIPT), "--ditto"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "could not download ditto_pytorch/models/appearance_extractor.pth" in again.stderr
    assert not servers["mirror"][0].requests
