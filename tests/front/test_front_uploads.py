"""Uploads that are small on the wire and huge once decoded, checked from their headers before decoding (memory
ceilings measured on a fresh front process), the audio decoded only up to the allowed length, the seed's range
checked exactly before anything is stored, and a job's files and row appearing together or not at all.
Runs on SQLite and, when TEST_POSTGRES_URL is set, on PostgreSQL."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile
from front_support import FakeModelClient, app, client, db_kind, make_app, upload, wait_for_job  # noqa: F401
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from demofront.errors import ApiError
from demofront.models import Job
from demofront.validation import check_audio_file, check_image

ROOT = Path(__file__).resolve().parents[2]
MEMORY_CEILING_MB = 64  # growth of the front's peak RSS allowed for one refused upload


def bomb_png(path: Path, width: int, height: int, channels: int = 3) -> Path:
    """A valid all-black PNG written row block by row block (zlib compresses zeros ~1000:1): megabytes on disk,
    gigabytes once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + width * channels)  # filter byte + pixels
    rows_per_block = max(1, (1 << 24) // len(row))
    compressor, parts, done = zlib.compressobj(9), [], 0
    while done < height:
        n = min(rows_per_block, height - done)
        parts.append(compressor.compress(row * n))
        done += n
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, {1: 0, 3: 2}[channels], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="session")
def bomb_12k(media_dir: Path) -> Path:
    """12000x12000 RGB, 0.4 MB: the issue's 1.1 GB PNG."""
    return bomb_png(media_dir / "bomb-12000.png", 12000, 12000)


@pytest.fixture(scope="session")
def bomb_30k(media_dir: Path) -> Path:
    """30000x30000 grey, 0.9 MB: past twice Pillow's default pixel limit (a 500 before)."""
    return bomb_png(media_dir / "bomb-30000.png", 30000, 30000, channels=1)


@pytest.fixture(scope="session")
def long_flac(media_dir: Path) -> Path:
    """20 minutes of 44.1 kHz stereo FLAC, digital silence (about 0.2 MB: FLAC stores constant blocks in a few
    bytes), written block by block. The length is refused before the silence could be."""
    path = media_dir / "twenty-minutes.flac"
    rate, seconds = 44100, 20 * 60
    block = np.zeros((rate, 2), dtype=np.float32)
    with soundfile.SoundFile(str(path), "w", rate, 2, format="FLAC", subtype="PCM_16") as out:
        for _ in range(seconds):
            out.write(block)
    return path


def probe_memory(tmp_path: Path, portrait: Path, silent: Path, image: Path, audio: Path) -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "front" / "front_memory_probe.py"), str(tmp_path / "probe"),
                             str(portrait), str(silent), str(image), str(audio)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["growth_mb"] = (measured["peak_after_kb"] - measured["peak_before_kb"]) / 1024
    print(f"\n{image.name} + {audio.name}: HTTP {measured['status']}, peak RSS "
          f"{measured['peak_before_kb'] / 1024:.0f} -> {measured['peak_after_kb'] / 1024:.0f} MB "
          f"(+{measured['growth_mb']:.1f} MB)")
    return measured


@pytest.mark.slow
@pytest.mark.parametrize("bomb", ["bomb_12k", "bomb_30k"])
def test_image_bombs_are_refused_from_the_header_within_a_memory_ceiling(request, bomb, tmp_path, portrait_path,
                                                                          silent_path, speech_path):
    image = request.getfixturevalue(bomb)
    assert image.stat().st_size < 1024 * 1024
    measured = probe_memory(tmp_path, portrait_path, silent_path, image, speech_path)
    assert measured["status"] == 400 and measured["body"]["field"] == "image", measured
    assert "too large" in measured["body"]["error"] and "4096 px per side" in measured["body"]["error"]
    assert measured["growth_mb"] < MEMORY_CEILING_MB, measured


@pytest.mark.slow
def test_a_long_flac_is_refused_from_its_header_within_a_memory_ceiling(long_flac, tmp_path, portrait_path,
                                                                        silent_path):
    assert long_flac.stat().st_size < 1024 * 1024
    measured = probe_memory(tmp_path, portrait_path, silent_path, portrait_path, long_flac)
    assert measured["status"] == 400 and measured["body"]["field"] == "audio", measured
    assert "too long (1200.0 s; the limit is 300 s)" in measured["body"]["error"]
    assert measured["growth_mb"] < MEMORY_CEILING_MB, measured


def test_pillow_pixel_limit_matches_the_front_limit(app):
    from PIL import Image

    assert Image.MAX_IMAGE_PIXELS == 4096 * 4096


def test_an_image_just_over_the_side_limit_is_refused_before_decoding(tmp_path):
    with pytest.raises(ApiError) as info:
        check_image(bomb_png(tmp_path / "wide.png", 4097, 64, channels=1))
    assert info.value.field == "image" and "too large (4097x64; the limit is 4096 px per side)" in info.value.message


def _streamed_webm(path: Path, seconds: int) -> Path:
    """Opus in WebM written to a pipe: the container cannot be seeked back, so it states no duration."""
    from sadtalker.io.video import ffmpeg_exe

    with open(path, "wb") as out:
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-f", "lavfi", "-i",
                        f"sine=frequency=220:sample_rate=48000:duration={seconds}", "-c:a", "libopus", "-b:a",
                        "16k", "-f", "webm", "pipe:1"], stdout=out, stderr=subprocess.DEVNULL, check=True)
    return path


def test_audio_without_a_stated_length_is_decoded_only_up_to_the_limit(tmp_path):
    from demofront.media import read_audio_header, scan_audio

    clip = _streamed_webm(tmp_path / "streamed.webm", 30)
    assert read_audio_header(clip) is None  # nothing to check up front: the decode itself is bounded
    scan = scan_audio(clip, max_seconds=2)
    assert scan.truncated and scan.seconds == pytest.approx(2.0) and scan.peak > 0.1
    with pytest.raises(ApiError, match=r"audio: the audio is too long \(more than 2 s; the limit is 2 s\)"):
        check_audio_file(clip, max_seconds=2)
    assert check_audio_file(clip, max_seconds=60).seconds == pytest.approx(30, abs=0.1)


def test_flac_is_decoded_block_by_block_up_to_the_limit(tmp_path):
    from demofront.media import scan_audio

    clip = tmp_path / "ten.flac"
    soundfile.write(str(clip), 0.5 * np.sin(np.linspace(0, 2000, 10 * 8000)).astype(np.float32), 8000)
    scan = scan_audio(clip, max_seconds=3)
    assert scan.truncated and scan.seconds == pytest.approx(3.0)
    whole = scan_audio(clip, max_seconds=60)
    assert not whole.truncated and whole.seconds == pytest.approx(10.0) and whole.peak == pytest.approx(0.5, abs=1e-3)


# -- the seed's range, before anything is stored ---------------------------------------------------------------

def _nothing_stored(app) -> bool:
    front = app.extensions["demofront"]
    with front.db.session() as s:
        rows = s.scalar(select(func.count(Job.id)))
    leftovers = [p for folder in ("jobs", "incoming") for p in (front.storage.root / folder).iterdir()]
    return rows == 0 and leftovers == []


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**64), "1e30", "nan", "seven"])
def test_a_seed_outside_0_to_2_63_minus_1_is_400_and_stores_nothing(app, client, portrait_path, speech_path, seed):
    reply = client.post("/api/generate", data={"image": upload(portrait_path), "audio": upload(speech_path),
                                               "seed": seed})
    assert reply.status_code == 400 and reply.is_json and reply.json["field"] == "seed", reply.json
    assert "seed must be" in reply.json["error"] and "9223372036854775807" in reply.json["error"]
    assert _nothing_stored(app)


@pytest.mark.parametrize("seed", [2**31, 2**63 - 1])
def test_large_seeds_are_kept_exactly_to_the_model(make_app, portrait_path, speech_path, seed):
    fake = FakeModelClient()
    web = make_app(fake).test_client()
    reply = web.post("/api/generate", data={"image": upload(portrait_path), "audio": upload(speech_path),
                                            "seed": str(seed)})
    assert reply.status_code == 202, reply.json
    assert reply.json["options"]["seed"] == seed
    assert wait_for_job(web, reply.json["id"])["options"]["seed"] == seed  # read back from the database
    assert [call["options"].seed for call in fake.calls] == [seed]


def test_a_failed_insert_leaves_no_files_and_no_row(app, client, portrait_path, speech_path):
    """The database refuses the commit after the folder moved into place: the folder goes too."""
    def refuse(session: Session) -> None:
        if any(isinstance(obj, Job) for obj in session.identity_map.values()):
            raise RuntimeError("the database went away")

    event.listen(Session, "before_commit", refuse)
    try:
        reply = client.post("/api/generate", data={"image": upload(portrait_path), "audio": upload(speech_path)})
    finally:
        event.remove(Session, "before_commit", refuse)
    assert reply.status_code == 500 and reply.is_json
    assert _nothing_stored(app)
