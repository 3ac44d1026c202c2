"""The landmark engine end to end: the output is measured by running the face mesh again on its frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from sadtalker import facemesh as fm
from sadtalker.audio import load_audio
from sadtalker.checkpoints import CheckpointLocations
from sadtalker.engine import load_engine
from sadtalker.errors import NoFaceError
from sadtalker.landmark.engine import LandmarkEngine
from sadtalker.landmark.motion import MIN_BLINK_INTERVAL_S, blink_track, head_track
from sadtalker.landmark.mouth import mouth_track
from sadtalker.landmark.warp import BLINK, JAW, FaceWarper
from sadtalker.options import GenerationOptions
from sadtalker.video import iter_video_frames, probe

FPS = 25


@pytest.fixture(scope="module")
def engine() -> LandmarkEngine:
    return LandmarkEngine()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("landmark_out")


@pytest.fixture(scope="module")
def speech_video(engine: LandmarkEngine, portrait_path: Path, long_speech_path: Path, outputs: Path):
    """~10 s of speech, crop 256, head motion on."""
    result = engine.generate(portrait_path, long_speech_path, GenerationOptions(preprocess="crop", size=256, seed=3),
                             outputs / "speech.mp4")
    return result, list(iter_video_frames(result.video_path))


@pytest.fixture(scope="module")
def speech_measures(speech_video):
    return measure(speech_video[1])


def measure(frames: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per frame, from a fresh face mesh: inner-lip gap and eye opening (over the face height), nose tip (px)."""
    mesh = fm.shared_face_mesh()
    mouth, eyes, nose = [], [], []
    for frame in frames:
        xy = mesh.landmarks(frame)[:, :2]
        face_h = np.linalg.norm(xy[fm.CHIN] - xy[fm.FOREHEAD])
        mouth.append(np.linalg.norm(xy[14] - xy[13]) / face_h)
        eyes.append((np.linalg.norm(xy[145] - xy[159]) + np.linalg.norm(xy[374] - xy[386])) / 2 / face_h)
        nose.append(xy[fm.NOSE_TIP])
    return {"mouth": np.array(mouth), "eyes": np.array(eyes), "nose": np.array(nose)}


def loudness_per_frame(path: Path, num_frames: int) -> np.ndarray:
    """RMS level of each 40 ms of audio in dB, floored 40 dB under the loudest frames."""
    samples = load_audio(path)
    hop = 16000 // FPS
    x = np.zeros(num_frames * hop, np.float32)
    x[: min(len(x), len(samples))] = samples[: len(x)]
    db = 20 * np.log10(np.sqrt((x.reshape(num_frames, hop) ** 2).mean(1)) + 1e-9)
    return np.maximum(db, db.max() - 40)


def test_is_the_engine_the_service_loads(tmp_path: Path) -> None:
    loaded = load_engine("landmark", CheckpointLocations(checkpoint_dir=tmp_path, gfpgan_dir=tmp_path))
    assert isinstance(loaded, LandmarkEngine) and loaded.name == "landmark"


def test_video_stream_frame_count_and_audio(speech_video, long_speech_path: Path) -> None:
    result, frames = speech_video
    seconds = len(load_audio(long_speech_path)) / 16000
    assert result.num_frames == round(seconds * FPS) == len(frames)
    info = probe(result.video_path)
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
    assert (info.width, info.height) == (256, 256) == (result.width, result.height)
    assert info.num_frames == result.num_frames
    assert abs(info.audio_seconds - seconds) < 0.05
    assert result.engine == "landmark" and result.timings["total"] > 0


def test_mouth_follows_loudness(speech_video, speech_measures, long_speech_path: Path) -> None:
    result, _ = speech_video
    loud = loudness_per_frame(long_speech_path, result.num_frames)
    r = np.corrcoef(speech_measures["mouth"], loud)[0, 1]
    assert r >= 0.6, f"Pearson r between mouth opening and loudness is {r:.3f}"


def test_blinks_in_ten_seconds(speech_measures) -> None:
    eyes = speech_measures["eyes"]
    closed = eyes < 0.5 * np.median(eyes)
    starts = np.flatnonzero(closed[1:] & ~closed[:-1])
    assert 1 <= len(starts) <= 8, f"{len(starts)} blinks"


def test_head_moves_unless_still(speech_measures) -> None:
    nose = speech_measures["nose"]
    assert np.linalg.norm(nose - nose[0], axis=1).max() > 1.5


def test_still_mode_keeps_the_nose(engine: LandmarkEngine, portrait_path: Path, speech_path: Path,
                                   outputs: Path) -> None:
    result = engine.generate(portrait_path, speech_path, GenerationOptions(still_mode=True, size=256, seed=1),
                             outputs / "still.mp4")
    frames = list(iter_video_frames(result.video_path))
    m = measure(frames)
    rest = fm.largest_face_landmarks(frames[0])[fm.NOSE_TIP, :2]
    drift = np.linalg.norm(m["nose"] - rest, axis=1)
    assert drift.max() <= 1.0, f"nose tip moved {drift.max():.2f} px in still mode"
    assert m["mouth"].max() - m["mouth"].min() > 0.02  # the mouth still talks


def test_silence_keeps_the_mouth_at_rest(engine: LandmarkEngine, portrait_path: Path, silent_path: Path,
                                         outputs: Path) -> None:
    result = engine.generate(portrait_path, silent_path, GenerationOptions(size=256), outputs / "silent.mp4")
    frames = list(iter_video_frames(result.video_path))
    assert len(frames) == 50
    m = measure(frames)
    rest = measure([np.asarray(Image.open(portrait_path).convert("RGB"))])["mouth"][0]
    assert np.abs(m["mouth"] - rest).max() <= 0.02 * rest + 0.002, (m["mouth"].max(), m["mouth"].min(), rest)


def test_no_face_is_an_error(engine: LandmarkEngine, no_face_path: Path, speech_path: Path, outputs: Path) -> None:
    with pytest.raises(NoFaceError, match="no face"):
        engine.generate(no_face_path, speech_path, GenerationOptions(), outputs / "none.mp4")
    assert not (outputs / "none.mp4").exists()


@pytest.fixture(scope="module")
def one_second(media_dir: Path) -> Path:
    path = media_dir / "tone_1s.wav"
    t = np.arange(16000) / 16000
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * 180 * t) * (t > 0.3)).astype(np.float32), 16000)
    return path


@pytest.fixture(scope="module")
def odd_portrait(media_dir: Path, portrait_path: Path) -> Path:
    """The astronaut on a wider, odd-sized canvas (301x257 after scaling)."""
    img = Image.open(portrait_path).convert("RGB").resize((257, 257))
    canvas = Image.new("RGB", (301, 257), (128, 128, 128))
    canvas.paste(img, (22, 0))
    path = media_dir / "odd.png"
    canvas.save(path)
    return path


@pytest.mark.parametrize("preprocess, size, expected", [
    ("crop", 256, (256, 256)), ("extcrop", 512, (512, 512)), ("resize", 256, (300, 256)),
    ("full", 256, (300, 256)), ("extfull", 512, (300, 256)),
])
def test_framing_per_preprocess(engine: LandmarkEngine, odd_portrait: Path, one_second: Path, outputs: Path,
                                preprocess: str, size: int, expected: tuple[int, int]) -> None:
    result = engine.generate(odd_portrait, one_second, GenerationOptions(preprocess=preprocess, size=size),
                             outputs / f"frame_{preprocess}.mp4")
    info = probe(result.video_path)
    assert (info.width, info.height) == expected == (result.width, result.height)
    assert info.num_frames == 25


def test_background_untouched_and_no_border_tearing(engine: LandmarkEngine, portrait_path: Path,
                                                    long_speech_path: Path, outputs: Path) -> None:
    """`full` on the 512 portrait: far from the face the frames equal the portrait (up to the codec)."""
    result = engine.generate(portrait_path, long_speech_path, GenerationOptions(preprocess="full", seed=5),
                             outputs / "full.mp4")
    source = np.asarray(Image.open(portrait_path).convert("RGB")).astype(np.int16)
    for i, frame in enumerate(iter_video_frames(result.video_path)):
        if i % 25:
            continue
        diff = np.abs(frame.astype(np.int16) - source).mean(2)
        assert diff[:, 430:].mean() < 2.5 and diff[400:, :].mean() < 2.5  # background, body
        assert diff[:4].mean() < 3 and diff[:, :4].mean() < 3             # image borders


def test_progress_reaches_one(engine: LandmarkEngine, portrait_path: Path, one_second: Path, outputs: Path) -> None:
    seen: list[float] = []
    engine.generate(portrait_path, one_second, GenerationOptions(), outputs / "p.mp4",
                    progress=lambda f, stage: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)


def test_controls_seeded_and_scaled(long_speech_path: Path) -> None:
    samples = load_audio(long_speech_path)
    n = round(len(samples) / 16000 * FPS)
    a = LandmarkEngine.controls(samples, n, GenerationOptions(seed=1))
    b = LandmarkEngine.controls(samples, n, GenerationOptions(seed=1))
    c = LandmarkEngine.controls(samples, n, GenerationOptions(seed=2))
    d = LandmarkEngine.controls(samples, n, GenerationOptions(seed=1, pose_style=7))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:, BLINK], c[:, BLINK]) and not np.array_equal(a[:, BLINK], d[:, BLINK])
    np.testing.assert_array_equal(a[:, JAW], c[:, JAW])  # the mouth depends only on the sound
    silent = LandmarkEngine.controls(samples, n, GenerationOptions(expression_scale=0.0))
    assert np.all(silent[:, JAW] == 0)
    louder = LandmarkEngine.controls(samples, n, GenerationOptions(expression_scale=1.5))
    assert louder[:, JAW].max() > 1.3 * a[:, JAW].max()
    still = LandmarkEngine.controls(samples, n, GenerationOptions(still_mode=True))
    assert np.all(still[:, 3:] == 0)


def test_mouth_track_opens_on_sound_and_closes_in_silence() -> None:
    t = np.arange(32000) / 16000
    burst = (0.3 * np.sin(2 * np.pi * 150 * t) * ((t > 0.5) & (t < 1.2))).astype(np.float32)
    track = mouth_track(burst, 50)
    assert track.opening[:12].max() == 0.0
    assert track.opening[15:30].min() > 0.5
    assert track.opening[40:].max() < 0.05
    assert np.all(mouth_track(np.zeros(32000, np.float32), 50).opening == 0)


def test_blinks_and_head_motion_tracks() -> None:
    closure = blink_track(25 * 60, FPS, np.random.default_rng(0))
    starts = np.flatnonzero((closure[1:] > 0) & (closure[:-1] == 0)) + 1
    assert 10 <= len(starts) <= 40
    assert np.diff(starts).min() >= MIN_BLINK_INTERVAL_S * FPS
    opening = np.r_[np.zeros(250), np.full(250, 0.8)].astype(np.float32)
    head = head_track(500, FPS, opening, np.random.default_rng(0))
    assert head.shape == (500, 4)
    assert np.abs(head[300:, 0]).max() > np.abs(head[:200, 0]).max()  # more motion while speaking
    assert np.abs(np.diff(head[:, 0])).max() < 0.01                   # smooth (radians per frame)


def test_warp_is_identity_at_rest(portrait_path: Path) -> None:
    image = np.asarray(Image.open(portrait_path).convert("RGB"))
    warper = FaceWarper(image, fm.largest_face_landmarks(image))
    out = warper.render(np.zeros(7, np.float32), image.copy())
    assert np.abs(out.astype(np.int16) - image).max() <= 1
    opened = warper.render(np.array([1, 0, 1, 0, 0, 0, 0], np.float32), image.copy())
    changed = np.abs(opened.astype(np.int16) - image).max(2) > 10
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 200
    # only the face changes when the jaw opens and the eyes close
    x0, y0, x1, y1 = mesh_box = (*fm.largest_face_landmarks(image)[:, :2].min(0), *fm.largest_face_landmarks(image)[:, :2].max(0))
    assert xs.min() >= x0 - 5 and xs.max() <= x1 + 5 and ys.min() >= y0 - 5 and ys.max() <= y1 + 30, mesh_box
