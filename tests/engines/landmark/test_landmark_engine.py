"""The landmark engine end to end: the output is measured by running the face mesh again on its frames."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile
from engine_runs import generate
from PIL import Image
from test_landmark_looks import mouth_darkness, synthetic

from sadtalker.engines.landmark.engine import LandmarkEngine
from sadtalker.engines.landmark.motion import MIN_BLINK_INTERVAL_S, blink_track, head_track
from sadtalker.engines.landmark.mouth import mouth_track
from sadtalker.engines.landmark.warp import BLINK, JAW, FaceWarper
from sadtalker.engines.registry import load_engine
from sadtalker.errors import NoFaceError
from sadtalker.io.audio import load_audio
from sadtalker.io.video import iter_video_frames, probe
from sadtalker.landmarks import facemesh as fm
from sadtalker.options import GenerationOptions
from sadtalker.weights import CheckpointLocations

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
    result = generate(engine, portrait_path, long_speech_path, GenerationOptions(preprocess="crop", size=256, seed=3),
                             outputs / "speech.mp4")
    return result, list(iter_video_frames(result.video_path))


@pytest.fixture(scope="module")
def speech_measures(speech_video):
    return measure(speech_video[1])


EYE_CORNERS = [fm.RIGHT_EYE_OUTER, fm.RIGHT_EYE_INNER, fm.LEFT_EYE_OUTER, fm.LEFT_EYE_INNER]


def measure(frames: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per frame, from a fresh face mesh: the inner-lip gap over the face height, and how much of the eye opening
    is dark iris/pupil. The eye polygons are the first frame's, moved with the eye corners (which stay put in a
    blink): this mesh places its eyelid points on the iris and hardly follows a closing eye, so a blink is measured
    as the iris disappearing."""
    mesh = fm.shared_face_mesh()
    mouth, iris = [], []
    rest = None
    for frame in frames:
        xy = mesh.landmarks(frame)[:, :2]
        rest = xy if rest is None else rest
        face_h = np.linalg.norm(xy[fm.CHIN] - xy[fm.FOREHEAD])
        mouth.append(np.linalg.norm(xy[14] - xy[13]) / face_h)
        shift = (xy[EYE_CORNERS] - rest[EYE_CORNERS]).mean(0)
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        dark = []
        for upper, lower in ((fm.RIGHT_EYE_UPPER, fm.RIGHT_EYE_LOWER), (fm.LEFT_EYE_UPPER, fm.LEFT_EYE_LOWER)):
            polygon = np.concatenate([rest[list(upper)], rest[list(lower)][::-1]]) + shift
            mask = np.zeros(grey.shape, np.uint8)
            cv2.fillPoly(mask, [np.round(polygon * 4).astype(np.int32)], 1, shift=2)
            dark.append((grey[mask > 0] < 70).mean())
        iris.append(np.mean(dark))
    return {"mouth": np.array(mouth), "iris": np.array(iris)}


def nose_shift(frames: list[np.ndarray], reference: np.ndarray, search: int = 6) -> np.ndarray:
    """How far (px, sub-pixel) the patch around the nose tip moved in each frame against the reference picture:
    template matching in a +-6 px window, refined with a parabola through the correlation peak."""
    x, y = np.round(fm.largest_face_landmarks(reference)[fm.NOSE_TIP, :2]).astype(int)
    half = 12
    template = cv2.cvtColor(reference, cv2.COLOR_RGB2GRAY)[y - half - 4:y + half - 4, x - half:x + half]
    shifts = []
    for frame in frames:
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        window = grey[y - half - 4 - search:y + half - 4 + search, x - half - search:x + half + search]
        score = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
        i, j = np.unravel_index(np.argmax(score), score.shape)
        offset = []
        for axis, k in ((0, i), (1, j)):
            line = score[:, j] if axis == 0 else score[i, :]
            if 0 < k < len(line) - 1:
                den = line[k - 1] - 2 * line[k] + line[k + 1]
                offset.append(k - search + (0.5 * (line[k - 1] - line[k + 1]) / den if den else 0.0))
            else:
                offset.append(float(k - search))
        shifts.append(np.hypot(*offset))
    return np.array(shifts)


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


def test_mouth_follows_loudness(speech_video, long_speech_path: Path) -> None:
    """The open mouth, measured as the dark area between the lips (the face mesh's inner-lip points hardly follow
    an opening in the calm-speech range), follows the loudness."""
    result, frames = speech_video
    loud = loudness_per_frame(long_speech_path, result.num_frames)
    r = np.corrcoef(mouth_darkness(frames), loud)[0, 1]
    assert r >= 0.6, f"Pearson r between mouth opening and loudness is {r:.3f}"


def test_blinks_in_ten_seconds(speech_measures) -> None:
    iris = speech_measures["iris"]
    closed = iris < 0.5 * np.median(iris)
    starts = np.flatnonzero(closed[1:] & ~closed[:-1])
    assert 1 <= len(starts) <= 8, f"{len(starts)} blinks"


def test_head_moves_unless_still(speech_video) -> None:
    frames = speech_video[1]
    assert nose_shift(frames[::5], frames[0]).max() > 1.5


def test_still_mode_keeps_the_nose(engine: LandmarkEngine, portrait_path: Path, speech_path: Path,
                                   outputs: Path) -> None:
    result = generate(engine, portrait_path, speech_path, GenerationOptions(still_mode=True, size=256, seed=1),
                             outputs / "still.mp4")
    frames = list(iter_video_frames(result.video_path))
    drift = nose_shift(frames, frames[0])
    assert drift.max() <= 1.0, f"nose tip moved {drift.max():.2f} px in still mode"
    dark = mouth_darkness(frames[::3])
    assert dark.max() - dark.min() > 0.002  # the mouth still talks


def test_silence_keeps_the_mouth_at_rest(engine: LandmarkEngine, portrait_path: Path, silent_path: Path,
                                         outputs: Path) -> None:
    """The inner-lip gap stays within 2% (of the face height) of the portrait's; with the head still, the mouth's
    pixels are the portrait's. (The service refuses silent clips; the engine itself must still rest the mouth in
    the pauses of speech and in idle mode, which this measures.)"""
    result = generate(engine, portrait_path, silent_path, GenerationOptions(size=256), outputs / "silent.mp4",
                      checked=False)
    frames = list(iter_video_frames(result.video_path))
    assert len(frames) == 50
    rest = measure([frames[0]])["mouth"][0]
    framed = np.asarray(Image.open(portrait_path).convert("RGB"))
    assert abs(rest - measure([framed])["mouth"][0]) <= 0.02
    assert np.abs(measure(frames)["mouth"] - rest).max() <= 0.02

    still = generate(engine, portrait_path, silent_path, GenerationOptions(size=256, still_mode=True),
                     outputs / "silent_still.mp4", checked=False)
    still_frames = list(iter_video_frames(still.video_path))
    xy = fm.largest_face_landmarks(still_frames[0])[:, :2]
    lips = xy[list(fm.UPPER_OUTER_LIP + fm.LOWER_OUTER_LIP)]
    (x0, y0), (x1, y1) = np.floor(lips.min(0)).astype(int) - 3, np.ceil(lips.max(0)).astype(int) + 3
    first = still_frames[0][y0:y1, x0:x1].astype(np.int16)
    for frame in still_frames[1:]:
        assert np.abs(frame[y0:y1, x0:x1].astype(np.int16) - first).mean() < 3  # the codec's noise only


def test_no_face_is_an_error(engine: LandmarkEngine, no_face_path: Path, speech_path: Path, outputs: Path) -> None:
    with pytest.raises(NoFaceError, match="no face"):
        generate(engine, no_face_path, speech_path, GenerationOptions(), outputs / "none.mp4")
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
    result = generate(engine, odd_portrait, one_second, GenerationOptions(preprocess=preprocess, size=size),
                             outputs / f"frame_{preprocess}.mp4")
    info = probe(result.video_path)
    assert (info.width, info.height) == expected == (result.width, result.height)
    assert info.num_frames == 25


def test_background_untouched_and_no_border_tearing(engine: LandmarkEngine, portrait_path: Path,
                                                    long_speech_path: Path, outputs: Path) -> None:
    """`full` on the 512 portrait: far from the face the frames equal the portrait (up to the codec)."""
    result = generate(engine, portrait_path, long_speech_path, GenerationOptions(preprocess="full", seed=5),
                             outputs / "full.mp4")
    source = np.asarray(Image.open(portrait_path).convert("RGB")).astype(np.int16)
    frames = list(iter_video_frames(result.video_path))
    first = frames[0].astype(np.int16)
    assert np.abs(first - source).mean() < 6  # the codec's loss only (4.4 at crf 20 on this detailed picture)
    moved = np.zeros(source.shape[:2], bool)
    for frame in frames[::10]:
        diff = np.abs(frame.astype(np.int16) - first).mean(2)
        # background right of the head, the body below it, the image border: as in the first frame (codec noise)
        assert diff[:, 400:].mean() < 2.5 and diff[330:, :].mean() < 2.5
        assert diff[:3].mean() < 2.5 and diff[:, :3].mean() < 2.5 and diff[-3:].mean() < 2.5
        moved |= diff > 12
    ys, xs = np.nonzero(moved)
    assert 120 < xs.mean() < 330 and 40 < ys.mean() < 250  # what moves is the head


def test_no_tearing_at_the_crop_border(speech_video) -> None:
    """In a tight crop the head reaches the frame's edge: its motion must not smear or blank the border rows."""
    frames = speech_video[1]
    first = frames[0].astype(np.int16)
    for frame in frames[::10]:
        for edge in (frame[:2], frame[-2:], frame[:, :2], frame[:, -2:]):
            assert edge.min() > 5 or first.min() <= 5  # no black (empty) border
        diff = np.abs(frame.astype(np.int16) - first)
        assert diff[:2].mean() < 12 and diff[:, :2].mean() < 12 and diff[:, -2:].mean() < 12


def test_progress_reaches_one(engine: LandmarkEngine, portrait_path: Path, one_second: Path, outputs: Path) -> None:
    seen: list[float] = []
    generate(engine, portrait_path, one_second, GenerationOptions(), outputs / "p.mp4",
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
    vowel = np.resize(synthetic("a", seconds=0.7), len(t)) * 3.0
    burst = (vowel * ((t > 0.5) & (t < 1.2))).astype(np.float32)
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
    assert changed.sum() > 200
    # only the face region changes when the jaw opens and the eyes close
    xy = fm.largest_face_landmarks(image)[:, :2]
    margin = 0.35 * np.linalg.norm(xy[fm.CHIN] - xy[fm.FOREHEAD])
    (x0, y0), (x1, y1) = xy.min(0) - margin, xy.max(0) + margin
    outside = np.ones(changed.shape, bool)
    outside[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = False
    assert not changed[outside].any()
    assert np.abs(opened.astype(np.int16) - image)[outside].max() <= 1


def test_contact_sheet(speech_video, speech_measures, artifacts_dir: Path) -> None:
    """Eight frames to look at (widest mouth, a blink, and evenly spaced ones): artifacts/landmark_contact_sheet.png."""
    frames = speech_video[1]
    picks = {int(np.argmax(speech_measures["mouth"])), int(np.argmin(speech_measures["iris"]))}
    for i in np.linspace(0, len(frames) - 1, 8).astype(int):
        if len(picks) < 8:
            picks.add(int(i))
    tiles = []
    for i in sorted(picks):
        tile = frames[i].copy()
        cv2.putText(tile, str(i), (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2)
        tiles.append(tile)
    sheet = np.concatenate([np.concatenate(tiles[:4], 1), np.concatenate(tiles[4:8], 1)], 0)
    path = artifacts_dir / "landmark_contact_sheet.png"
    Image.fromarray(sheet).save(path)
    assert path.stat().st_size > 10_000 and sheet.shape == (512, 1024, 3)


def test_idle_mode_needs_no_audio(engine: LandmarkEngine, portrait_path: Path, outputs: Path) -> None:
    result = generate(engine, portrait_path, None, GenerationOptions(idle_mode=True, idle_seconds=1.2),
                             outputs / "idle.mp4")
    info = probe(result.video_path)
    assert result.num_frames == info.num_frames == 30 and abs(info.audio_seconds - 1.2) < 0.05
