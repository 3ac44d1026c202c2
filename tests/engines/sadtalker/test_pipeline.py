"""The SadTalker pipeline end to end with stand-in face/motion stages and a tiny random renderer: every preprocess
mode, streaming into the encoder, still/expression/angle options, idle and reference-video modes, progress,
the enhancer hook and the device choice. The real stages are tested in their own files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from engine_runs import generate
from pipeline_doubles import CountingEnhancer, StandInFaceStage, StandInMotionStage, face_geometry
from renderer_factory import tiny_renderer

from sadtalker.engines.sadtalker.paste import paste_region
from sadtalker.engines.sadtalker.pipeline import SadTalkerPipeline
from sadtalker.errors import AudioError, InvalidInputError
from sadtalker.io.image import load_image
from sadtalker.io.video import VideoWriter, iter_video_frames, probe
from sadtalker.options import GenerationOptions
from sadtalker.runtime.device import resolve_device

SECONDS = 0.6  # 15 frames


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny nets are faster on one thread, and the test machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def short_speech(speech_path: Path, tmp_path_factory) -> Path:
    """The first 0.6 s of the spoken clip, 16 kHz."""
    from sadtalker.io.audio import load_audio

    path = tmp_path_factory.mktemp("pipeline_audio") / "short.wav"
    soundfile.write(str(path), load_audio(speech_path)[4000:4000 + int(SECONDS * 16000)], 16000)
    return path


@pytest.fixture(scope="module")
def odd_portrait(portrait_path: Path, tmp_path_factory) -> Path:
    """The astronaut at 501x383 (odd sizes on purpose)."""
    from PIL import Image

    path = tmp_path_factory.mktemp("pipeline_img") / "odd.png"
    Image.open(portrait_path).resize((501, 383)).save(path)
    return path


@pytest.fixture(scope="module")
def reference_video(tmp_path_factory) -> Path:
    """20 frames getting brighter, with a 0.8 s tone."""
    path = tmp_path_factory.mktemp("pipeline_ref") / "ref.mp4"
    t = np.arange(int(0.8 * 16000)) / 16000
    with VideoWriter(path, 64, 64, audio=(0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)) as writer:
        for i in range(20):
            writer.write(np.full((64, 64, 3), 40 + 9 * i, np.uint8))
    return path


@pytest.fixture(scope="module")
def mute_reference_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pipeline_ref") / "mute.mp4"
    with VideoWriter(path, 64, 64) as writer:
        for i in range(12):
            writer.write(np.full((64, 64, 3), 100, np.uint8))
    return path


class SpyRenderer:
    """Delegates to a real (tiny) renderer, recording the arguments and how far rendering ran ahead."""

    def __init__(self, renderer) -> None:
        self.inner = renderer
        self.size = renderer.size
        self.calls: list[tuple] = []
        self.produced = 0

    def render(self, *args):
        self.calls.append(args)
        for frame in self.inner.render(*args):
            self.produced += 1
            yield frame


def make_pipeline(enhancer=None):
    face, motion = StandInFaceStage(), StandInMotionStage()
    renderer = SpyRenderer(tiny_renderer(64))
    pipe = SadTalkerPipeline(face, motion, {256: renderer, 512: SpyRenderer(tiny_renderer(64, seed=1))},
                             torch.device("cpu"), enhancer=enhancer)
    return pipe, face, motion, renderer


@pytest.mark.parametrize("preprocess,size", [("crop", 256), ("resize", 256), ("full", 256), ("extfull", 256),
                                             ("extcrop", 512)])
def test_every_mode_makes_a_valid_mp4(odd_portrait, short_speech, tmp_path, preprocess, size):
    pipe, face, motion, _ = make_pipeline()
    out = tmp_path / f"{preprocess}.mp4"
    result = generate(pipe, odd_portrait, short_speech, GenerationOptions(preprocess=preprocess, size=size,
                                                                         batch_size=4), out)
    info = probe(out)
    frames = round(SECONDS * 25)
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
    assert info.num_frames == result.num_frames == frames
    assert info.audio_seconds == pytest.approx(SECONDS, abs=0.05)
    crop_w, crop_h = face_geometry(383, 501, preprocess).size
    expected = {"crop": (256, int(256 * crop_h / crop_w) // 2 * 2), "extcrop": (512, int(512 * crop_h / crop_w) // 2 * 2),
                "resize": (256, int(256 * 383 / 501) // 2 * 2), "full": (500, 382), "extfull": (500, 382)}[preprocess]
    assert (info.width, info.height) == (result.width, result.height) == expected
    assert face.calls == [(preprocess, size)]
    assert motion.calls[0]["pose_style"] == 0 and motion.calls[0]["idle"] is False


def test_full_mode_keeps_the_picture_outside_the_face(odd_portrait, short_speech, tmp_path):
    pipe, *_ = make_pipeline()
    out = tmp_path / "full.mp4"
    generate(pipe, odd_portrait, short_speech, GenerationOptions(preprocess="full"), out)
    picture = load_image(odd_portrait)[:382, :500].astype(int)
    x1, y1, x2, y2 = paste_region(face_geometry(383, 501, "full"), extended=False)
    frame = next(iter_video_frames(out)).astype(int)
    keep = np.ones(frame.shape[:2], bool)
    keep[y1 - 4:y2 + 4, x1 - 4:x2 + 4] = False
    assert np.abs(frame - picture)[keep].mean() < 4.0  # only H.264's loss
    assert np.abs(frame - picture)[y1:y2, x1:x2].mean() > 10.0  # the random renderer's face went in


def test_frames_stream_into_the_encoder(odd_portrait, short_speech, tmp_path, monkeypatch):
    """Memory stays flat: at every write the renderer is at most one batch ahead of the encoder."""
    pipe, _, _, renderer = make_pipeline()
    ahead: list[int] = []
    original = VideoWriter.write

    def write(self, frame):
        ahead.append(renderer.produced - self.frames_written)
        original(self, frame)

    monkeypatch.setattr(VideoWriter, "write", write)
    generate(pipe, odd_portrait, short_speech, GenerationOptions(batch_size=3), tmp_path / "s.mp4")
    assert len(ahead) == 15 and max(ahead) <= 3


def test_options_reach_the_renderer_and_motion(odd_portrait, short_speech, tmp_path):
    pipe, _, motion, renderer = make_pipeline()
    options = GenerationOptions(still_mode=True, expression_scale=1.5, pose_style=7, seed=11, batch_size=5,
                                input_yaw=(-20.0, 20.0), input_roll=(5.0,), use_blink=False)
    generate(pipe, odd_portrait, short_speech, options, tmp_path / "o.mp4")
    crop, coeffs, source, preprocess, batch, still, scale, angles, _ = renderer.calls[0]
    assert (preprocess, batch, still, scale) == ("crop", 5, True, 1.5)
    assert coeffs.shape == (15, 70) and source.shape == (73,)
    assert angles.yaw[0] == pytest.approx(-20.0) and angles.yaw[-1] > 15.0 and np.all(np.diff(angles.yaw) >= 0)
    assert np.all(angles.roll == 5.0) and angles.pitch is None
    call = motion.calls[0]
    assert (call["still"], call["pose_style"], call["seed"], call["use_blink"]) == (True, 7, 11, False)


def test_expression_scale_changes_the_video(odd_portrait, short_speech, tmp_path):
    pipe, *_ = make_pipeline()

    def frames(**kw):
        out = tmp_path / f"{len(list(tmp_path.iterdir()))}.mp4"
        generate(pipe, odd_portrait, short_speech, GenerationOptions(**kw), out)
        return np.stack(list(iter_video_frames(out))).astype(int)

    base, scaled = frames(), frames(expression_scale=3.0)
    assert np.abs(base - scaled).mean() > 0.5


def test_progress_is_reported_per_stage(odd_portrait, short_speech, tmp_path):
    pipe, *_ = make_pipeline()
    seen: list[tuple[float, str]] = []
    generate(pipe, odd_portrait, short_speech, GenerationOptions(batch_size=4), tmp_path / "p.mp4",
                  progress=lambda fraction, stage: seen.append((fraction, stage)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    stages = [s for _, s in seen]
    assert "finding the face" in stages and "predicting motion" in stages
    assert [s for s in stages if s.startswith("rendering")] == [f"rendering frame {n}/15" for n in (4, 8, 12, 15)]


def test_idle_mode_needs_no_audio(odd_portrait, tmp_path):
    pipe, _, motion, _ = make_pipeline()
    out = tmp_path / "idle.mp4"
    result = generate(pipe, odd_portrait, None, GenerationOptions(idle_mode=True, idle_seconds=0.8), out)
    info = probe(out)
    assert info.num_frames == result.num_frames == 20
    assert info.audio_seconds == pytest.approx(0.8, abs=0.05)
    assert motion.calls[0]["idle"] is True and motion.calls[0]["samples"] == 12800


@pytest.mark.parametrize("ref_info,pose,blink", [("pose", True, False), ("blink", False, True),
                                                  ("pose+blink", True, True)])
def test_reference_video_drives_pose_or_blinks(odd_portrait, short_speech, reference_video, tmp_path, ref_info,
                                               pose, blink):
    pipe, face, motion, _ = make_pipeline()
    options = GenerationOptions(preprocess="full", ref_info=ref_info)
    result = generate(pipe, odd_portrait, short_speech, options, tmp_path / "r.mp4", ref_video=reference_video)
    assert result.num_frames == 15  # the speech sets the length
    assert face.video_calls == [(20, "full")]
    call = motion.calls[0]
    assert (call["ref_pose"] is not None, call["ref_eyeblink"] is not None) == (pose, blink)
    if pose:
        assert call["ref_pose"].shape == (20, 73) and np.all(np.diff(call["ref_pose"][:, 64]) >= 0)


def test_separate_blink_video(odd_portrait, short_speech, reference_video, mute_reference_video, tmp_path):
    pipe, face, motion, _ = make_pipeline()
    generate(pipe, odd_portrait, short_speech, GenerationOptions(ref_info="pose"), tmp_path / "r.mp4",
             ref_video=reference_video, ref_eyeblink_video=mute_reference_video)
    assert len(motion.calls[0]["ref_pose"]) == 20 and len(motion.calls[0]["ref_eyeblink"]) == 12


def test_reference_video_all_mode_uses_its_motion_and_sound(odd_portrait, reference_video, mute_reference_video,
                                                            tmp_path):
    pipe, _, motion, renderer = make_pipeline()
    out = tmp_path / "all.mp4"
    result = generate(pipe, odd_portrait, None, GenerationOptions(ref_info="all"), out, ref_video=reference_video)
    info = probe(out)
    assert motion.calls == []  # no audio-to-motion: the video's own coefficients
    assert info.num_frames == result.num_frames == 20
    assert info.audio_seconds == pytest.approx(0.8, abs=0.05)
    assert renderer.calls[0][1].shape == (20, 70)
    result = generate(pipe, odd_portrait, None, GenerationOptions(ref_info="all"), tmp_path / "mute.mp4",
                      ref_video=mute_reference_video)
    assert result.num_frames == 12 and probe(tmp_path / "mute.mp4").audio_seconds == pytest.approx(0.48, abs=0.05)


def test_enhancer_sees_every_pasted_frame(odd_portrait, short_speech, tmp_path):
    enhancer = CountingEnhancer()
    pipe, *_ = make_pipeline(enhancer=enhancer)
    out = tmp_path / "e.mp4"
    generate(pipe, odd_portrait, short_speech, GenerationOptions(preprocess="full", enhancer=True), out)
    assert enhancer.frames == 15
    frame = next(iter_video_frames(out))
    assert frame.shape == (382, 500, 3) and frame[1:6, 1:6].mean() > 230


def test_a_30_fps_reference_video_is_read_at_25_fps(odd_portrait, tmp_path):
    """One second of a 30 fps reference drives one second of video (25 frames) with its one second of sound: read
    at the native rate it would make 30 frames, longer than the sound, and stretch the pose."""
    path = tmp_path / "ref30.mp4"
    t = np.arange(16000) / 16000
    with VideoWriter(path, 64, 64, audio=(0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), fps=30) as writer:
        for i in range(30):
            writer.write(np.full((64, 64, 3), 40 + 6 * i, np.uint8))
    pipe, face, _, _ = make_pipeline()
    result = generate(pipe, odd_portrait, None, GenerationOptions(ref_info="all"), tmp_path / "o.mp4", ref_video=path)
    assert face.video_calls == [(25, "crop")]
    info = probe(tmp_path / "o.mp4")
    assert info.num_frames == result.num_frames == 25
    assert info.audio_seconds == pytest.approx(1.0, abs=0.05)


def test_input_errors_are_named_and_leave_no_file(odd_portrait, short_speech, silent_path, tmp_path):
    pipe, *_ = make_pipeline()
    out = tmp_path / "x.mp4"
    with pytest.raises(InvalidInputError, match="driven_audio is required"):
        generate(pipe, odd_portrait, None, GenerationOptions(), out)
    with pytest.raises(AudioError, match="silent"):
        generate(pipe, odd_portrait, silent_path, GenerationOptions(), out)
    with pytest.raises(InvalidInputError, match="reference video not found: nope.mp4"):
        generate(pipe, odd_portrait, short_speech, GenerationOptions(), out, ref_video=tmp_path / "nope.mp4")
    assert not out.exists()


def test_a_failing_enhancer_removes_the_partial_video(odd_portrait, short_speech, tmp_path):
    class Broken:
        def enhance_iter(self, frames):
            for i, frame in enumerate(frames):
                if i == 5:
                    raise RuntimeError("enhancer broke")
                yield frame

    pipe, *_ = make_pipeline(enhancer=Broken())
    out = tmp_path / "b.mp4"
    with pytest.raises(RuntimeError, match="enhancer broke"):
        generate(pipe, odd_portrait, short_speech, GenerationOptions(enhancer=True), out)
    assert not out.exists()


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InvalidInputError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="no CUDA device"):
            resolve_device("cuda")
