"""How the landmark engine looks (issue 21): no smear at the picture's edge, blinks that close with skin, lips that
keep their thickness, mouth shapes that follow the vowels, and a mouth in sync with the voice."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from engine_runs import generate
from PIL import Image
from scipy.signal import lfilter

from sadtalker.engines.landmark.engine import LandmarkEngine, apply_framing, choose_framing
from sadtalker.engines.landmark.mouth import MouthAnalyzer, frame_samples, mouth_track
from sadtalker.engines.landmark.warp import BLINK, FaceWarper, _expand
from sadtalker.io.audio import load_audio
from sadtalker.io.video import iter_video_frames
from sadtalker.landmarks import facemesh as fm
from sadtalker.options import GenerationOptions

FPS = 25
# the largest head motion the head track makes (motion.py: idle + speaking amplitude x 1.6, plus the nod), and more
MAX_HEAD = [(r, sx, sy, sc) for r in (-0.07, 0.07) for sx in (-0.04, 0.04) for sy in (-0.06, 0.08) for sc in (-0.02, 0.02)]


def framed_warper(image: np.ndarray, preprocess: str, size: int = 512) -> tuple[FaceWarper, np.ndarray, np.ndarray]:
    mesh = fm.shared_face_mesh().landmarks(image)
    framed, framed_mesh = apply_framing(image, mesh, choose_framing(image.shape, mesh, preprocess, size))
    return FaceWarper(framed, framed_mesh), framed, framed_mesh[:, :2]


@pytest.fixture(scope="module")
def astronaut(portrait_path: Path) -> np.ndarray:
    return np.asarray(Image.open(portrait_path).convert("RGB"))


@pytest.fixture(scope="module")
def crop_warper(astronaut: np.ndarray):
    return framed_warper(astronaut, "crop")


# -- borders ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preprocess", ["crop", "extcrop", "resize", "full"])
def test_border_rows_match_the_source_under_maximal_head_motion(astronaut: np.ndarray, preprocess: str) -> None:
    """A tight portrait (hair at the top edge) and the whole astronaut: with the largest head motion and the mouth
    open, the outer two rows and columns of every frame are the framed portrait's, and every sample position lies
    inside the portrait."""
    tight = np.ascontiguousarray(astronaut[40:360, 70:390])
    for image in (tight, astronaut):
        warper, framed, _ = framed_warper(image, preprocess, 256)
        h, w = framed.shape[:2]
        for roll, sx, sy, sc in MAX_HEAD:
            coeffs = np.array([1.0, 0.0, 1.0, roll, sx, sy, sc], np.float32)
            out = warper.render(coeffs, framed.copy()).astype(np.int16)
            for edge in (np.s_[:2], np.s_[-2:], np.s_[:, :2], np.s_[:, -2:]):
                assert np.abs(out[edge] - framed[edge]).max() <= 1, (preprocess, roll, sx, sy, sc)
            maps, _ = warper._fine_map(_expand(coeffs))
            assert maps[..., 0].min() >= 0 and maps[..., 0].max() <= w - 1
            assert maps[..., 1].min() >= 0 and maps[..., 1].max() <= h - 1


# -- blinks ----------------------------------------------------------------------------------------------------------
BLINK_MARGIN = 10  # luma levels (measured: at most 6 now, 12-18 for the eye that kept a white line before)


def eye_brightness_over_skin(frame: np.ndarray, rest_xy: np.ndarray) -> list[float]:
    """Per eye: the brightest pixel inside the open eye's outline minus the 90th percentile of the skin around it."""
    luma = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    out = []
    for upper, lower in ((fm.RIGHT_EYE_UPPER, fm.RIGHT_EYE_LOWER), (fm.LEFT_EYE_UPPER, fm.LEFT_EYE_LOWER)):
        polygon = np.concatenate([rest_xy[list(upper)], rest_xy[list(lower)][::-1]])
        eye = np.zeros(luma.shape, np.uint8)
        cv2.fillPoly(eye, [np.round(polygon * 4).astype(np.int32)], 1, shift=2)
        opening = np.linalg.norm(rest_xy[upper[4]] - rest_xy[lower[4]])
        k = int(round(opening * 1.5)) * 2 + 1
        ring = cv2.dilate(eye, np.ones((k, k), np.uint8)) & ~cv2.dilate(eye, np.ones((k // 2 | 1, k // 2 | 1), np.uint8))
        out.append(float(luma[eye > 0].max() - np.percentile(luma[(ring & 1) > 0], 90)))
    return out


@pytest.mark.parametrize("seed", [1, 4])
def test_blink_peak_covers_the_eye_with_skin(engine_for_looks: LandmarkEngine, portrait_path: Path, speech_path: Path,
                                             tmp_path: Path, seed: int) -> None:
    """In the video's fully closed frame (512, where the eye is big enough to judge past the codec's ringing),
    nothing in either eye is brighter than the skin around it by more than BLINK_MARGIN (no eye white left between
    the lids); in the first frame the eye white is there."""
    options = GenerationOptions(size=512, still_mode=True, seed=seed)
    result = generate(engine_for_looks, portrait_path, speech_path, options, tmp_path / "blink.mp4")
    frames = list(iter_video_frames(result.video_path))
    controls = LandmarkEngine.controls(load_audio(speech_path), len(frames), options)
    peak = int(np.argmax(controls[:, BLINK]))
    assert controls[peak, BLINK] == 1.0
    rest_xy = fm.shared_face_mesh().landmarks(frames[0])[:, :2]
    assert min(eye_brightness_over_skin(frames[0], rest_xy)) > BLINK_MARGIN  # open: the eye white shows
    closed = eye_brightness_over_skin(frames[peak], rest_xy)
    assert max(closed) <= BLINK_MARGIN, f"eye brighter than the skin by {closed} at the blink's peak"


def test_blink_timing() -> None:
    from sadtalker.engines.landmark.motion import blink_profile

    profile = blink_profile(FPS)
    peak = int(np.argmax(profile))
    assert profile[peak] == 1.0
    assert peak * 1000 / FPS <= 100 and 120 <= (len(profile) - 1 - peak) * 1000 / FPS <= 160


@pytest.fixture(scope="module")
def engine_for_looks() -> LandmarkEngine:
    return LandmarkEngine()


# -- lips --------------------------------------------------------------------------------------------------------------
THICKNESS_RATIO = 0.85


def lower_lip_rows(warper: FaceWarper, coeffs: np.ndarray, xy: np.ndarray) -> int:
    """Rows of the output's middle column that show the portrait's lower lip (between the inner and outer lower lip
    points at rest) and that the mouth painting left alone."""
    coeffs = np.asarray(coeffs, np.float32)
    maps, _ = warper._fine_map(_expand(coeffs))
    x0, y0 = warper.roi[:2]
    plain = cv2.remap(warper.image, maps, None, cv2.INTER_LINEAR)
    out = warper.render(coeffs, warper.image.copy())[y0:y0 + plain.shape[0], x0:x0 + plain.shape[1]]
    cx = int(round(xy[[13, 14], 0].mean())) - x0
    top, bottom = xy[14, 1], xy[17, 1]
    rows = 0
    for x in range(cx - 2, cx + 3):
        src_y = maps[:, x, 1]
        untouched = np.abs(out[:, x].astype(int) - plain[:, x]).max(1) <= 2
        rows += int(((src_y >= top) & (src_y <= bottom) & untouched).sum())
    return rows // 5


def test_lips_keep_their_thickness_at_the_widest_opening(crop_warper) -> None:
    warper, _, xy = crop_warper
    rest = lower_lip_rows(warper, np.zeros(7), xy)
    for jaw in (1.0, 1.6):
        opened = lower_lip_rows(warper, np.array([jaw, 0, 0, 0, 0, 0, 0]), xy)
        assert opened >= THICKNESS_RATIO * rest, f"lower lip {opened} rows at jaw {jaw}, {rest} closed"


def test_widest_opening_is_a_calm_jaw(crop_warper) -> None:
    """At full loudness (jaw 1) the lips part by at most 7% of the face height."""
    warper, _, xy = crop_warper
    face_h = float(np.linalg.norm(xy[fm.CHIN] - xy[fm.FOREHEAD]))
    rest_w, rest_h = warper.opening_size(np.zeros(7))
    _, opened = warper.opening_size(np.array([1.0, 0, 0, 0, 0, 0, 0]))
    assert 0.04 * face_h <= opened - rest_h <= 0.07 * face_h


# -- vowels ----------------------------------------------------------------------------------------------------------
HIGH_FORMANTS = [(3300, 250), (3750, 200)]
FORMANTS = {"a": [(730, 90), (1090, 110), (2440, 170)] + HIGH_FORMANTS,
            "i": [(270, 60), (2290, 100), (3010, 170)] + HIGH_FORMANTS,
            "u": [(300, 60), (870, 90), (2240, 170)] + HIGH_FORMANTS,
            "m": [(250, 60)]}


def synthetic(name: str, seconds: float = 0.4, f0: float = 120.0, sr: int = 16000) -> np.ndarray:
    """A steady vowel (Peterson & Barney's formants) or nasal murmur from a cascade formant synthesiser: a pulse
    train, glottal roll-off, unit-gain resonators, lip radiation; murmurs ~12 dB under the vowels."""
    n = int(seconds * sr)
    x = np.zeros(n)
    x[:: int(sr / f0)] = 1.0
    x = lfilter([1.0], [1.0, -0.9], x)
    for f, bw in FORMANTS[name]:
        r = np.exp(-np.pi * bw / sr)
        a1, a2 = -2 * r * np.cos(2 * np.pi * f / sr), r * r
        x = lfilter([1 + a1 + a2], [1.0, a1, a2], x)
    x = np.diff(x, prepend=0.0)
    return (x / np.sqrt(np.mean(x * x)) * (0.1 if name != "m" else 0.025)).astype(np.float32)


def test_vowels_give_distinct_mouth_shapes(crop_warper) -> None:
    """/a/ /i/ /u/ /m/ in a row: open for a, spread (wide and low) for i, rounded (narrow) for u, shut for m."""
    warper, _, _ = crop_warper
    gap = np.zeros(1600, np.float32)
    names = "aium"
    clip = np.concatenate([np.zeros(3200, np.float32)] + [np.r_[synthetic(v), gap] for v in names])
    track = mouth_track(clip, len(clip) // 640)
    rest_w, rest_h = warper.opening_size(np.zeros(7))
    shapes = {}
    for k, name in enumerate(names):
        start = 5 + k * 12  # each sound: 10 frames, then 2 of silence
        steady = slice(start + 5, start + 10)
        jaw, width = float(np.median(track.opening[steady])), float(np.median(track.width[steady]))
        w, h = warper.opening_size(np.array([jaw, width, 0, 0, 0, 0, 0]))
        shapes[name] = (jaw, width, w, h - rest_h)
    ratio = {n: shapes[n][2] / max(shapes[n][3], 1e-3) for n in "aiu"}
    assert shapes["a"][0] > 0.7 and shapes["i"][0] < 0.55 and shapes["u"][0] < 0.65
    assert shapes["i"][1] > 0.5 and shapes["u"][1] < -0.4 and abs(shapes["a"][1]) < 0.25
    assert ratio["i"] > 1.5 * ratio["a"] and ratio["i"] > 1.5 * ratio["u"], ratio
    assert shapes["u"][2] < 0.85 * shapes["a"][2] and shapes["u"][2] < 0.8 * shapes["i"][2], shapes
    assert shapes["m"][0] < 0.05, f"lips open {shapes['m'][0]:.2f} on /m/"


def test_mouth_analysis_is_causal(long_speech_path: Path) -> None:
    """Frame k's controls depend on audio up to the end of frame k only (its own 40 ms): changing what comes later
    changes nothing before; pushing frames one by one gives the batch result."""
    samples = load_audio(long_speech_path)
    n = len(samples) // 640
    base = mouth_track(samples, n)
    k = n // 2
    changed = samples.copy()
    changed[(k + 1) * 640:] = np.random.default_rng(0).normal(0, 0.2, len(changed) - (k + 1) * 640)
    other = mouth_track(changed, n)
    np.testing.assert_array_equal(base.opening[:k + 1], other.opening[:k + 1])
    np.testing.assert_array_equal(base.width[:k + 1], other.width[:k + 1])
    assert not np.array_equal(base.opening[k + 1:], other.opening[k + 1:])
    analyzer = MouthAnalyzer()
    live = np.array([analyzer.push(chunk).opening for chunk in frame_samples(samples, n, 16000, FPS)], np.float32)
    np.testing.assert_allclose(live, base.opening, atol=1e-5)  # one frame at a time = all at once


# -- sync --------------------------------------------------------------------------------------------------------------
def best_lag(mouth: np.ndarray, loudness: np.ndarray, max_lag: int = 5) -> int:
    """The shift (frames) of the mouth against the loudness with the highest correlation; > 0: the mouth lags."""
    scores = {}
    for lag in range(-max_lag, max_lag + 1):
        a, b = (mouth[lag:], loudness[:len(loudness) - lag]) if lag >= 0 else (mouth[:lag], loudness[-lag:])
        scores[lag] = np.corrcoef(a, b)[0, 1]
    return max(scores, key=scores.get)


def frame_loudness_db(samples: np.ndarray, num_frames: int) -> np.ndarray:
    chunks = frame_samples(samples, num_frames, 16000, FPS).astype(np.float64)
    db = 10 * np.log10(np.mean(chunks ** 2, axis=1) + 1e-12)
    return np.maximum(db, db.max() - 40)


def mouth_darkness(frames: list[np.ndarray]) -> np.ndarray:
    """Per frame: how much dark mouth shows (pixels darker than 60 in a box around the lips, from a fresh mesh),
    over the face height squared."""
    mesh = fm.shared_face_mesh()
    out = []
    for frame in frames:
        xy = mesh.landmarks(frame)[:, :2]
        face_h = np.linalg.norm(xy[fm.CHIN] - xy[fm.FOREHEAD])
        lips = xy[list(fm.UPPER_OUTER_LIP + fm.LOWER_OUTER_LIP)]
        (x0, y0), (x1, y1) = (lips.min(0) - 0.02 * face_h).astype(int), (lips.max(0) + 0.06 * face_h).astype(int)
        grey = cv2.cvtColor(frame[max(y0, 0):y1, max(x0, 0):x1], cv2.COLOR_RGB2GRAY)
        out.append((grey < 60).sum() / face_h ** 2)
    return np.array(out)


def test_mouth_in_sync_with_the_voice(engine_for_looks: LandmarkEngine, portrait_path: Path, long_speech_path: Path,
                                      tmp_path: Path) -> None:
    """On espeak-ng speech the open mouth (dark area in the video) follows the loudness, best at a lag within one
    frame (40 ms)."""
    result = generate(engine_for_looks, portrait_path, long_speech_path, GenerationOptions(size=256, seed=2),
                                       tmp_path / "sync.mp4")
    frames = list(iter_video_frames(result.video_path))
    dark = mouth_darkness(frames)
    loud = frame_loudness_db(load_audio(long_speech_path), len(frames))
    assert np.corrcoef(dark, loud)[0, 1] > 0.5
    lag = best_lag(dark, loud)
    assert abs(lag) <= 1, f"best mouth/loudness lag {lag} frames"


# -- typed text --------------------------------------------------------------------------------------------------------
def test_visemes_from_espeak_phonemes() -> None:
    """speak_with_visemes: espeak-ng's phoneme timing drives the shapes: shut on b/m/p, open on a, spread on ee,
    rounded on oo; in sync with the sound it returns."""
    pytest.importorskip("ctypes")
    from sadtalker.engines.landmark.visemes import speak, speak_with_visemes

    text = "Bob met Pam. We see two moons."
    spoken = speak(text)
    names = [p.name for p in spoken.phonemes]
    assert {"b", "m", "p", "i:", "u:"} <= set(names)
    samples, track = speak_with_visemes(text)
    assert len(track.opening) == round(len(samples) / 16000 * FPS)
    rate = spoken.sample_rate

    def at(name: str, nth: int = 0) -> tuple[float, float]:
        hits = [k for k, p in enumerate(spoken.phonemes) if p.name == name]
        p = spoken.phonemes[hits[nth]]
        end = spoken.phonemes[hits[nth] + 1].start
        frames = np.arange(int(np.ceil(p.start * FPS)), int(end * FPS))
        mid = int(frames[len(frames) // 2]) if len(frames) else int(p.start * FPS)
        return float(track.opening[mid]), float(track.width[mid])

    assert at("a")[0] > 0.6
    assert at("i:")[1] > 0.5 and at("u:")[1] < -0.5
    assert min(at("m")[0], at("m", 1)[0]) < 0.15
    loud = frame_loudness_db(samples, len(track.opening))
    assert abs(best_lag(track.opening, loud)) <= 1
    assert rate == 22050
