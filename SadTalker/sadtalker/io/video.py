"""Every call to ffmpeg (the binary shipped by imageio-ffmpeg): decoding audio and video, encoding the result."""
from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from sadtalker.errors import FFmpegError

logger = logging.getLogger(__name__)

FPS = 25
FRAGMENTED_SUFFIX = ".fmp4"  # an output path ending so is written as fragmented MP4 (see VideoWriter)
FRAGMENT_FRAMES = 12         # fragmented output: a keyframe, so a fragment, every 12 frames (0.48 s at 25 fps) ...
QUICK_START_FRAMES = 4       # ... and at each of the first 4 frames, so that the first frame is playable at once


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: list[str], what: str, input_bytes: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg with an argument list; raise FFmpegError with the tail of stderr on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", *args]
    proc = subprocess.run(cmd, input=input_bytes, capture_output=True, check=False)
    if proc.returncode != 0:
        raise FFmpegError(f"ffmpeg could not {what}: {_tail(proc.stderr)}")
    return proc


def _tail(stderr: bytes, lines: int = 4) -> str:
    text = stderr.decode("utf-8", "replace").strip().splitlines()
    return " | ".join(text[-lines:]) if text else "no output"


def decode_audio(path: Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Any format ffmpeg reads -> float32 mono at `sample_rate`, shape (N,); at most `max_seconds` when given."""
    limit = [] if max_seconds is None else ["-t", f"{max_seconds:.3f}"]
    proc = run_ffmpeg(
        ["-i", str(path), *limit, "-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-acodec", "pcm_f32le",
         "-"],
        f"decode the audio of {Path(path).name}",
    )
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


@dataclass(frozen=True)
class MediaInfo:
    video_codec: str | None
    audio_codec: str | None
    width: int
    height: int
    pix_fmt: str | None
    num_frames: int
    video_seconds: float
    audio_seconds: float


def probe(path: Path) -> MediaInfo:
    """Streams of a media file, with exact frame count and audio length (decoded, not read from headers)."""
    path = Path(path)
    header = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, check=False)
    text = header.stderr.decode("utf-8", "replace")
    vmatch = re.search(r"Stream #\S+.*?Video: (\w+)[^,]*, (\w+)[^,]*(?:\([^)]*\))?, (\d+)x(\d+)", text)
    amatch = re.search(r"Stream #\S+.*?Audio: (\w+)", text)
    if not vmatch and not amatch:
        raise FFmpegError(f"ffmpeg found no audio or video stream in {path.name}: {_tail(header.stderr)}")
    num_frames, video_seconds, audio_seconds = 0, 0.0, 0.0
    if vmatch:
        proc = run_ffmpeg(["-i", str(path), "-map", "0:v:0", "-f", "null", "-"], f"decode the video of {path.name}")
        err = proc.stderr.decode("utf-8", "replace")
        frames = re.findall(r"frame=\s*(\d+)", err)
        num_frames = int(frames[-1]) if frames else 0
        times = re.findall(r"time=(\d+):(\d+):([\d.]+)", err)
        video_seconds = _seconds(times[-1]) if times else 0.0
    if amatch:
        audio_seconds = len(decode_audio(path, 48000)) / 48000.0
    return MediaInfo(
        video_codec=vmatch.group(1) if vmatch else None,
        audio_codec=amatch.group(1) if amatch else None,
        width=int(vmatch.group(3)) if vmatch else 0,
        height=int(vmatch.group(4)) if vmatch else 0,
        pix_fmt=vmatch.group(2) if vmatch else None,
        num_frames=num_frames,
        video_seconds=video_seconds,
        audio_seconds=audio_seconds,
    )


def _seconds(hms: tuple[str, str, str]) -> float:
    return int(hms[0]) * 3600 + int(hms[1]) * 60 + float(hms[2])


def video_seconds(path: Path) -> float:
    """A video's length from its container header (nothing decoded). Raises FFmpegError without a video stream."""
    path = Path(path)
    header = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                            check=False, timeout=60)
    text = header.stderr.decode("utf-8", "replace")
    if not re.search(r"Stream #\S+.*?Video:", text):
        raise FFmpegError(f"{path.name} has no video stream")
    match = re.search(r"Duration: (\d+):(\d+):([\d.]+)", text)
    return _seconds(match.groups()) if match else 0.0  # type: ignore[arg-type]


def iter_video_frames(path: Path, max_frames: int | None = None, fps: int | None = None) -> Iterator[np.ndarray]:
    """Decode a video's frames as RGB uint8 (H, W, 3), one at a time (a reference video, a result to check).

    `fps`: resampled to this rate first (frames dropped or repeated by time), so that a reference video made at
    another rate drives the same span of time as the audio it goes with."""
    info = probe(path)
    if not info.video_codec:
        raise FFmpegError(f"{Path(path).name} has no video stream")
    w, h = info.width, info.height
    rate = [] if fps is None else ["-vf", f"fps={fps}"]
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", *rate, "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-"]
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile)
        assert proc.stdout is not None
        count = 0
        try:
            while max_frames is None or count < max_frames:
                buf = proc.stdout.read(w * h * 3)
                if len(buf) < w * h * 3:
                    break
                count += 1
                yield np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
        finally:
            proc.stdout.close()
            proc.kill()
            proc.wait()


def remux_faststart(source: Path, target: Path) -> None:
    """Copy a (fragmented) MP4's streams into a plain MP4 with its index in front; nothing is re-encoded."""
    run_ffmpeg(["-y", "-i", str(source), "-map", "0", "-c", "copy", "-movflags", "+faststart", "-f", "mp4",
                str(target)], f"remux {Path(source).name}")


class VideoWriter:
    """Streams RGB frames into ffmpeg (H.264 yuv420p, faststart) and muxes the audio as AAC.

    Frames go straight to ffmpeg's stdin as they are produced, so memory does not grow with the clip length.
    Use as a context manager; `close()` waits for ffmpeg and raises FFmpegError if it failed.
    With `input_format="yuv420p"`, frames are given as I420 planes (`write_yuv420p`), which spares ffmpeg the
    colour conversion (the landmark engine renders in YUV for speed). `tune` is x264's (e.g. "zerolatency");
    `aac_coder="fast"` makes the AAC encoder about 3x cheaper (the landmark engine's speed budget).

    An `output_path` ending in `.fmp4` (FRAGMENTED_SUFFIX) is written as fragmented MP4: an empty moov, then a
    moof+mdat fragment per keyframe, flushed as soon as it is complete. x264 runs without lookahead
    (`zerolatency`), with a keyframe on each of the first QUICK_START_FRAMES frames (the first fragment, one frame,
    is out as soon as the second frame is encoded: the SadTalker engine's first batch is playable as soon as it is
    rendered) and then every FRAGMENT_FRAMES. The file is playable while it grows, which is how the streaming
    endpoint sends a generation as it renders. Any other path gets a plain MP4 with its index in front (faststart).
    """

    def __init__(self, output_path: Path, width: int, height: int, audio: np.ndarray | None = None,
                 sample_rate: int = 16000, fps: int = FPS, crf: int = 18, preset: str = "veryfast",
                 input_format: str = "rgb24", tune: str | None = None, audio_bitrate: str = "128k",
                 aac_coder: str | None = None) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 yuv420p needs even dimensions; got {width}x{height}")
        self.output_path = Path(output_path)
        if input_format not in ("rgb24", "yuv420p"):
            raise ValueError(f"input_format must be rgb24 or yuv420p; got {input_format!r}")
        self.width, self.height, self.frames_written = width, height, 0
        self.input_format = input_format
        self._tmpdir = tempfile.TemporaryDirectory(prefix="sadtalker-enc-")
        args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
                "-f", "rawvideo", "-pix_fmt", input_format, "-s", f"{width}x{height}", "-r", str(fps), "-i", "-"]
        if audio is not None:
            import soundfile

            wav = Path(self._tmpdir.name) / "audio.wav"
            soundfile.write(str(wav), np.asarray(audio, dtype=np.float32), sample_rate, subtype="PCM_16")
            args += ["-i", str(wav), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", audio_bitrate]
            if aac_coder:
                args += ["-aac_coder", aac_coder]
        args += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
        fragmented = self.output_path.suffix == FRAGMENTED_SUFFIX
        if tune or fragmented:
            args += ["-tune", tune or "zerolatency"]
        if fragmented:
            keyframes = f"expr:lt(n,{QUICK_START_FRAMES})+eq(mod(n,{FRAGMENT_FRAMES}),0)"
            args += ["-g", str(FRAGMENT_FRAMES), "-sc_threshold", "0", "-force_key_frames", keyframes,
                     "-flush_packets", "1", "-f", "mp4",
                     "-movflags", "+frag_keyframe+empty_moov+default_base_moof", str(self.output_path)]
        else:
            args += ["-movflags", "+faststart", str(self.output_path)]
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        self._stderr = open(Path(self._tmpdir.name) / "stderr.txt", "w+b")
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=self._stderr)

    def write(self, frame: np.ndarray) -> None:
        """One frame, RGB uint8 of shape (height, width, 3)."""
        if self.input_format == "yuv420p":
            raise ValueError("this writer takes I420 planes (write_yuv420p); open it with input_format='rgb24' for RGB")
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a uint8 frame of shape {(self.height, self.width, 3)}; got {frame.dtype} {frame.shape}")
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            self._fail("encode the video")
        self.frames_written += 1

    def write_yuv420p(self, planes: np.ndarray) -> None:
        """One frame as I420 planes, uint8 of shape (height * 3 // 2, width): Y, then U, then V (BT.601, limited
        range, as OpenCV's COLOR_RGB2YUV_I420 gives). Only for a writer opened with input_format="yuv420p"."""
        if self.input_format != "yuv420p":
            raise ValueError("write_yuv420p needs a VideoWriter opened with input_format='yuv420p'")
        if planes.shape != (self.height * 3 // 2, self.width) or planes.dtype != np.uint8:
            raise ValueError(f"expected uint8 I420 planes of shape {(self.height * 3 // 2, self.width)}; "
                             f"got {planes.dtype} {planes.shape}")
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(planes).data)
        except BrokenPipeError:
            self._fail("encode the video")
        self.frames_written += 1

    def close(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        code = self._proc.wait()
        try:
            if code != 0:
                self._fail("encode the video")
        finally:
            self._stderr.close()
            self._tmpdir.cleanup()

    def _fail(self, what: str) -> None:
        self._proc.kill()
        self._proc.wait()
        self._stderr.seek(0)
        raise FFmpegError(f"ffmpeg could not {what}: {_tail(self._stderr.read())}")

    def abort(self) -> None:
        self._proc.kill()
        self._proc.wait()
        self._stderr.close()
        self._tmpdir.cleanup()
        self.output_path.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
