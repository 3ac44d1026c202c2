"""Shared fixtures: the astronaut portrait, spoken clips from espeak-ng, a temporary checkpoint folder."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Test artefacts worth looking at (contact sheets, screenshots); git-ignored."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """Golden data of ../shared/tools/parity (made from the original code); the parity tests skip without it."""
    value = os.environ.get("PARITY_DIR")
    if not value:
        pytest.skip("PARITY_DIR not set: parity tests need the golden data of shared/tools/parity (golden.py --out DIR)")
    return Path(value)


@pytest.fixture(scope="session")
def ditto_parity_dir() -> Path:
    """Golden data of ../shared/tools/ditto_parity (the original Ditto on random weights); skips without it."""
    value = os.environ.get("DITTO_PARITY_DIR")
    if not value:
        pytest.skip("DITTO_PARITY_DIR not set: Ditto parity tests need the golden data of shared/tools/ditto_parity "
                    "(python3 scripts/parity_data.py --only ditto prints the export line)")
    path = Path(value)
    if not (path / "golden").is_dir():
        pytest.skip(f"DITTO_PARITY_DIR={path} holds no golden/ folder")
    return path


@pytest.fixture(scope="module")  # module: a test module may narrow `parity_dir` with its own checks
def parity_locations(parity_dir: Path):
    """The random-weight official checkpoints the golden data was made with."""
    from sadtalker.weights import CheckpointLocations

    return CheckpointLocations(checkpoint_dir=parity_dir / "checkpoints", gfpgan_dir=parity_dir / "gfpgan" / "weights")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def portrait_path(media_dir: Path) -> Path:
    """skimage's astronaut (Eileen Collins), 512x512 RGB PNG."""
    from PIL import Image
    from skimage import data

    path = media_dir / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


@pytest.fixture(scope="session")
def no_face_path(media_dir: Path) -> Path:
    from PIL import Image

    path = media_dir / "plain.png"
    Image.fromarray(np.full((256, 256, 3), (40, 120, 200), dtype=np.uint8)).save(path)
    return path


def speak(text: str, path: Path, speed: int = 150) -> Path:
    """Speech from Debian's espeak-ng (22.05 kHz mono WAV)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng; scripts/setup.sh does it as root)")
    subprocess.run([exe, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def speech_path(media_dir: Path) -> Path:
    """About 3 s of English speech."""
    return speak("Hello there. This is a short test of the talking head.", media_dir / "speech.wav")


@pytest.fixture(scope="session")
def long_speech_path(media_dir: Path) -> Path:
    """About 10 s of English speech with pauses."""
    text = ("The quick brown fox jumps over the lazy dog. [[_:_:]] Then it rests for a while. "
            "Talking heads need open vowels, like ah, oh, and ee. Good night and good luck.")
    return speak(text, media_dir / "long_speech.wav", speed=140)


@pytest.fixture(scope="session")
def silent_path(media_dir: Path) -> Path:
    import soundfile

    path = media_dir / "silence.wav"
    soundfile.write(str(path), np.zeros(16000 * 2, dtype=np.float32), 16000)
    return path


@pytest.fixture(autouse=True)
def _quiet_third_party_logs(caplog: pytest.LogCaptureFixture) -> None:
    for name in ("httpx", "urllib3", "gradio"):
        logging.getLogger(name).setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def official_checkpoints(tmp_path_factory: pytest.TempPathFactory):
    """A checkpoint folder with the SadTalker files (256 safetensors + both mapping files) in the official layout,
    random weights. Written once per test session (~730 MB on disk)."""
    from sadtalker.engines.sadtalker.random_weights import write_official_file
    from sadtalker.weights import MAPPING_CROP, MAPPING_FULL, SADTALKER_FILES, CheckpointLocations

    root = tmp_path_factory.mktemp("checkpoints")
    for seed, name in enumerate((SADTALKER_FILES[256], MAPPING_CROP, MAPPING_FULL)):
        write_official_file(name, root, seed=seed * 10)
    return CheckpointLocations(checkpoint_dir=root, gfpgan_dir=root / "gfpgan")


@pytest.fixture(scope="session")
def official_gfpgan_weights(official_checkpoints):
    """GFPGAN/facexlib files in the official layout (random weights) under the fixture's gfpgan folder."""
    from sadtalker.engines.sadtalker.random_weights import write_official_file
    from sadtalker.weights import AWING_FILE, GFPGAN_FILE, PARSENET_FILE, RETINAFACE_FILE

    for seed, name in enumerate((GFPGAN_FILE, RETINAFACE_FILE, AWING_FILE, PARSENET_FILE)):
        write_official_file(name, official_checkpoints.gfpgan_dir, seed=100 + seed)
    return official_checkpoints
