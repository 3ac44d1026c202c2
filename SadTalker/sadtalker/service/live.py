"""Live mode over a WebSocket (`/live/ws` on the model service): 16 kHz PCM in, JPEG frames and the voice out at a
steady 25 fps.

Protocol (version 2; also in README "Live protocol"):
1. client -> text: {"type": "start", "image": <base64 of a PNG/JPEG/WebP portrait>, "size": 256|512,
   "preprocess": "crop"|"extcrop"|"resize"|"full"|"extfull", "seed", "pose_style", "expression_scale", "still_mode",
   "voice": true|false} (every field but "image" optional, GenerationOptions' rules; "voice" defaults to true).
2. server -> text: {"type": "ready", "protocol": 2, "width", "height", "fps": 25, "sample_rate": 16000,
   "mouth_box": [x0, y0, x1, y1], "voice": bool}, or {"type": "error", "error": ...} and a close (4400 bad input,
   1013 full); a full service also waits for the start message before it refuses.
3. client -> binary: mono PCM, signed 16-bit little-endian, 16 kHz, any chunk size (20 ms is good), as captured.
4. server -> binary, one per frame: a 24-byte header "<IQffI" = frame index, audio position P (samples received
   when the frame was made: it shows the 40 ms before that), jaw opening, eyelid closure, voice byte count V; then
   V bytes of the voice (PCM16, the samples [P - V/2, P): all sound received since the previous frame, so the
   frames' voice put end to end is the sound sent, each sample once); then the JPEG. V is 0 with "voice": false.
   Play the voice gaplessly and show each frame while its sound [P - 640, P) plays: picture and sound in step.
   Frames keep coming at 25 fps whether or not sound arrives (silence: blinks and idle head motion go on).
5. server -> text every 5 s: {"type": "stats", "frames", "dropped", "render_ms", "audio_samples", "voice_samples",
   "voice_dropped"}. Either side closes to end; the client may send {"type": "stop"}.

The frame clock is the server's monotonic clock (frame n at start + n / 25 s): a late frame is skipped, never
queued, so the picture neither drifts nor lags behind the sound however long the session. The voice of a skipped
frame goes with the next one.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from sadtalker.errors import InvalidInputError, TalkingHeadError
from sadtalker.io.audio import SAMPLE_RATE
from sadtalker.io.video import FPS

logger = logging.getLogger(__name__)

PROTOCOL = 2
HEADER = struct.Struct("<IQffI")      # index, audio position, jaw, eyelids, voice bytes that follow
WINDOW = SAMPLE_RATE // FPS          # each frame shows the latest 40 ms of sound
STALE_AUDIO_SECONDS = 0.25           # no sound for this long: silence (a paused microphone closes the mouth)
VOICE_MAX_SAMPLES = SAMPLE_RATE      # voice waiting for a frame, at most (only a client sending faster than real
                                     # time reaches this; the oldest goes)
STATS_SECONDS = 5.0
START_TIMEOUT_SECONDS = 30.0
CLOSE_BAD_INPUT, CLOSE_FULL = 4400, 1013
START_FIELDS = ("size", "preprocess", "seed", "pose_style", "expression_scale", "still_mode", "use_blink")


def split_frame(message: bytes) -> tuple[tuple[int, int, float, float, int], bytes, bytes]:
    """A frame message as a client reads it: (header fields, voice PCM16, JPEG); the inverse of what
    `_send_frames` sends (for Python clients: scripts/bench_live.py, the tests)."""
    fields = HEADER.unpack(message[:HEADER.size])
    end = HEADER.size + fields[4]
    return fields, bytes(message[HEADER.size:end]), bytes(message[end:])


class LiveHub:
    """The live sessions of one model service: at most `max_sessions` at once, portraits read with the service's
    input limits, faces found by one face-mesh model shared under a lock."""

    def __init__(self, settings: Any, max_sessions: int = 8) -> None:
        self.settings = settings
        self.max_sessions = max_sessions
        self.active = 0
        self._lock = threading.Lock()
        self._mesh_lock = threading.Lock()
        self._mesh: Any = None

    def reserve(self) -> bool:
        with self._lock:
            if self.active >= self.max_sessions:
                return False
            self.active += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.active -= 1

    def animator(self, start: dict[str, Any]) -> Any:
        """A LiveAnimator for the start message. Raises InvalidInputError / NoFaceError / ImageError."""
        from sadtalker.engines.landmark.live import LiveAnimator
        from sadtalker.io.image import load_image
        from sadtalker.landmarks import facemesh as fm
        from sadtalker.options import GenerationOptions

        encoded = start.get("image")
        if not isinstance(encoded, str) or not encoded:
            raise InvalidInputError("start: 'image' (base64 of a portrait) is required")
        if "," in encoded[:100]:  # a data: URL
            encoded = encoded.split(",", 1)[1]
        if len(encoded) * 3 // 4 > self.settings.limits.max_upload_bytes:
            raise InvalidInputError("start: the image is larger than the upload limit")
        try:
            data = base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            raise InvalidInputError(f"start: 'image' is not base64 ({exc})") from None
        options = GenerationOptions.from_mapping({k: start[k] for k in START_FIELDS if k in start})
        with tempfile.TemporaryDirectory(prefix="live-") as tmp:
            path = Path(tmp) / "portrait"
            path.write_bytes(data)
            image = load_image(path, self.settings.limits)
        with self._mesh_lock:
            if self._mesh is None:
                self._mesh = fm.shared_face_mesh()
            return LiveAnimator(image, self._mesh, options)


class _Audio:
    """The sound received so far: the latest second (for the mouth), the count of all samples, when the last came,
    and, with the voice on, the samples not yet sent back."""

    def __init__(self, voice: bool) -> None:
        self.buffer = np.zeros(SAMPLE_RATE, np.float32)
        self.total = 0
        self.last_at = 0.0
        self.voice = bytearray() if voice else None
        self.voice_sent = 0
        self.voice_dropped = 0

    def push(self, pcm: bytes) -> None:
        pcm = pcm[: len(pcm) // 2 * 2]
        samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
        if samples.size == 0:
            return
        if self.voice is not None:
            self.voice += pcm
            excess = len(self.voice) // 2 - VOICE_MAX_SAMPLES
            if excess > 0:
                del self.voice[: 2 * excess]
                self.voice_dropped += excess
        samples = samples[-len(self.buffer):]
        self.buffer = np.roll(self.buffer, -samples.size)
        self.buffer[-samples.size:] = samples
        self.total += samples.size
        self.last_at = time.monotonic()

    def take(self) -> tuple[np.ndarray, int, bytes]:
        """For the next frame: the latest 40 ms (zeros when the sound stopped coming), the sample count it ends at,
        and the voice received since the previous frame (PCM16 ending at that count; empty with the voice off)."""
        voice = b""
        if self.voice:
            voice = bytes(self.voice)
            self.voice.clear()
            self.voice_sent += len(voice) // 2
        if time.monotonic() - self.last_at > STALE_AUDIO_SECONDS:
            return np.zeros(WINDOW, np.float32), self.total, voice
        return self.buffer[-WINDOW:].copy(), self.total, voice


async def run_session(websocket: WebSocket, hub: LiveHub) -> None:
    """One live session on an accepted Starlette WebSocket (see the module docstring for the protocol).

    Every refusal (a full service too) answers the start message, never the bare connection: frames sent right
    behind the 101 response can reach a client in its handshake's read, where simple-websocket 1.1 leaves them
    unparsed until more bytes come; the server then waits 10 s for a close reply that never comes and drops TCP,
    and that client sees 1005 without the message."""
    reserved = hub.reserve()
    try:
        try:
            text = await asyncio.wait_for(websocket.receive_text(), START_TIMEOUT_SECONDS)
            if not reserved:
                message = f"all {hub.max_sessions} live sessions are in use; try again later"
                await _refuse(websocket, message, CLOSE_FULL)
                return
            start = json.loads(text)
            if not isinstance(start, dict) or start.get("type") != "start":
                raise InvalidInputError("the first message must be {\"type\": \"start\", \"image\": ...}")
            voice = start.get("voice", True)
            if not isinstance(voice, bool):
                raise InvalidInputError(f"start: 'voice' must be true or false, not {voice!r}")
            animator = await asyncio.to_thread(hub.animator, start)
        except (TalkingHeadError, ValueError, asyncio.TimeoutError) as exc:
            await _refuse(websocket, str(exc) or "no start message in time", CLOSE_BAD_INPUT)
            return
        await websocket.send_text(json.dumps({
            "type": "ready", "protocol": PROTOCOL, "width": animator.width, "height": animator.height, "fps": FPS,
            "sample_rate": SAMPLE_RATE, "mouth_box": list(animator.mouth_box), "voice": voice}))
        audio = _Audio(voice)
        receiver = asyncio.create_task(_receive(websocket, audio))
        try:
            await _send_frames(websocket, animator, audio, receiver)
        finally:
            receiver.cancel()
    except WebSocketDisconnect:
        pass
    finally:
        if reserved:
            hub.release()


async def _refuse(websocket: Any, message: str, code: int) -> None:
    """The error as a text message, then a close with the same reason (a client may see only the close)."""
    await websocket.send_text(json.dumps({"type": "error", "error": message}))
    await websocket.close(code, reason=message.encode()[:123].decode(errors="ignore"))  # at most 123 bytes fit


async def _receive(websocket: Any, audio: _Audio) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes"):
            audio.push(message["bytes"])
        elif message.get("text"):
            try:
                if json.loads(message["text"]).get("type") == "stop":
                    return
            except (ValueError, AttributeError):
                pass


async def _send_frames(websocket: Any, animator: Any, audio: _Audio, receiver: asyncio.Task) -> None:
    started = time.monotonic()
    index, sent, dropped, render_total = 0, 0, 0, 0.0
    next_stats = started + STATS_SECONDS
    while not receiver.done():
        due = started + index / FPS
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -1.0 / FPS:  # more than a frame late: skip to the current one (the clock never drifts)
            skip = int(-delay * FPS)
            index += skip
            dropped += skip
            continue
        window, position, voice = audio.take()  # one step, no await: the voice ends where the window does
        t = time.perf_counter()
        frame = await asyncio.to_thread(animator.frame, window, index)
        render_total += time.perf_counter() - t
        header = HEADER.pack(index, position, frame.opening, frame.blink, len(voice))
        await websocket.send_bytes(b"".join((header, voice, frame.jpeg)))
        sent += 1
        index += 1
        if time.monotonic() >= next_stats:
            next_stats += STATS_SECONDS
            await websocket.send_text(json.dumps({
                "type": "stats", "frames": sent, "dropped": dropped, "audio_samples": audio.total,
                "voice_samples": audio.voice_sent, "voice_dropped": audio.voice_dropped,
                "render_ms": round(1000 * render_total / max(1, sent), 2)}))


def install(app: Any, hub: LiveHub, path: str = "/live/ws") -> None:
    """Add the live WebSocket route to the service's FastAPI app."""
    @app.websocket(path)
    async def live(websocket: WebSocket) -> None:
        await websocket.accept()
        await run_session(websocket, hub)

    @app.get("/live/health")
    def live_health() -> dict[str, Any]:
        return {"protocol": PROTOCOL, "active": hub.active, "max_sessions": hub.max_sessions, "path": path}
