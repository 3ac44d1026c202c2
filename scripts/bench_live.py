#!/usr/bin/env python
"""Live mode figures against a model service's /live/ws: sound-to-picture latency and how many sessions hold 25 fps.

    python scripts/bench_live.py --start                       # starts a model service here (landmark engine)
    python scripts/bench_live.py --url ws://127.0.0.1:7860/live/ws --size 512 --sessions 1,2,4,8

Each session sends espeak-ng speech as 20 ms chunks of 16 kHz PCM at real-time pace, as a microphone would, and
reads the frames (with the voice unless --no-voice). Latency: for each frame, its arrival (plus its JPEG decode)
minus the moment the newest sound it shows was sent (the frame's header says how many samples the server had); the
voice comes in the same message, so its latency is the same; also the lag at which the frames' jaw opening best
correlates with the sent loudness, and whether the voice that came back is the sound sent, sample for sample.
Capacity: sessions at once, each must receive >= 24.5 frames/s with under 1 % skipped.
"""
from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "SadTalker"))
from live_services import start, stop, wait_for, free_port  # noqa: E402

CHUNK = 320  # 20 ms at 16 kHz


def speech(folder: Path, seconds: float) -> np.ndarray:
    from sadtalker.io.audio import load_audio

    wav = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(wav), "The quick brown fox jumps over the lazy dog. Then it "
                    "rests for a while. Talking heads need open vowels, like ah, oh, and ee. Good night and good "
                    "luck."], check=True, capture_output=True)
    samples = load_audio(wav)
    reps = int(np.ceil(seconds * 16000 / len(samples)))
    return np.tile(samples, reps)[: int(seconds * 16000)]


def session(url: str, image: bytes, samples: np.ndarray, size: int, voice: bool, out: dict) -> None:
    import cv2
    import simple_websocket

    from sadtalker.service.live import split_frame

    ws = simple_websocket.Client.connect(url)
    ws.send(json.dumps({"type": "start", "image": base64.b64encode(image).decode(), "size": size, "voice": voice}))
    ready = json.loads(ws.receive(timeout=60))
    if ready.get("type") != "ready":
        out["error"] = ready
        return
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    sent_at = np.zeros(len(samples) // CHUNK + 1)

    def feed() -> None:
        t0 = time.perf_counter()
        for i in range(len(samples) // CHUNK):
            sent_at[i] = time.perf_counter()
            ws.send(pcm[i * CHUNK * 2:(i + 1) * CHUNK * 2])
            time.sleep(max(0.0, t0 + (i + 1) * CHUNK / 16000 - time.perf_counter()))

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    frames, voice_parts = [], []
    while feeder.is_alive():
        message = ws.receive(timeout=2)
        if isinstance(message, (bytes, bytearray)):
            arrived = time.perf_counter()
            (index, position, opening, _, _), voice_part, jpeg = split_frame(message)
            voice_parts.append(voice_part)
            cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            shown = time.perf_counter()
            frames.append((index, position, opening, arrived, shown))
    ws.close()
    out["frames"] = frames
    out["sent_at"] = sent_at
    out["voice"] = b"".join(voice_parts)
    out["pcm"] = pcm


def analyse(result: dict, samples: np.ndarray) -> dict:
    frames, sent_at = result["frames"], result["sent_at"]
    latencies = []
    for index, position, _, _, shown in frames:
        chunk = position // CHUNK - 1  # the chunk that brought the newest sample
        if 25 < index and 0 <= chunk < len(sent_at) and sent_at[chunk] > 0:
            latencies.append(shown - sent_at[chunk])
    span = frames[-1][3] - frames[0][3]
    indices = [f[0] for f in frames]
    skipped = indices[-1] - indices[0] + 1 - len(indices)
    # loudness of the sent sound per 10 ms against the frames' opening, on the clock of the sender
    t0 = sent_at[0]
    hop = 160
    rms = np.sqrt(np.mean(samples[: len(samples) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    loud_t = t0 + (np.arange(len(rms)) + 1) * hop / 16000
    frame_t = np.array([f[4] for f in frames])
    opening = np.array([f[2] for f in frames])
    best = (-1.0, 0.0)
    for lag_ms in range(0, 400, 5):
        lagged = np.interp(frame_t - lag_ms / 1000, loud_t, rms)
        if lagged.std() > 0 and opening.std() > 0:
            r = float(np.corrcoef(lagged, opening)[0, 1])
            best = max(best, (r, lag_ms))
    last_position = frames[-1][1]
    voice_exact = result["voice"] == result["pcm"][: 2 * last_position] if result["voice"] else None
    return {"fps": (len(frames) - 1) / span, "skipped": skipped, "frames": len(frames), "voice_exact": voice_exact,
            "voice_seconds": len(result["voice"]) / 32000,
            "latency_first_30s_ms": 1000 * statistics.median(latencies[:750]),
            "latency_last_30s_ms": 1000 * statistics.median(latencies[-750:]),
            "latency_p50_ms": 1000 * statistics.median(latencies),
            "latency_p95_ms": 1000 * float(np.percentile(latencies, 95)),
            "corr_lag_ms": best[1], "corr": best[0]}


def voice_note(stats: list[dict]) -> str:
    """Whether each session's voice came back identical to the sound it sent (up to its last frame)."""
    got = [s.get("voice_exact") for s in stats]
    if all(g is None for g in got):
        return "off"
    seconds = sum(s.get("voice_seconds", 0.0) for s in stats)
    return (f"{seconds:.1f} s in all, identical to the sound sent" if all(got) else
            f"NOT identical in {got.count(False)} of {len(got)} sessions")


def run(url: str, image: bytes, samples: np.ndarray, size: int, voice: bool, n: int) -> list[dict]:
    results = [{} for _ in range(n)]
    threads = [threading.Thread(target=session, args=(url, image, samples, size, voice, results[i]))
               for i in range(n)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join()
    return [analyse(r, samples) if "frames" in r else {"error": r.get("error")} for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service's ws://host:port/live/ws")
    parser.add_argument("--start", action="store_true", help="start a model service here")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--sessions", default="1,2,4", help="comma-separated session counts to try")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--no-voice", action="store_true", help="ask for frames only (\"voice\": false)")
    args = parser.parse_args()
    if not args.url and not args.start:
        parser.error("give --url or --start")
    procs: list = []
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            url = args.url
            if args.start:
                import os

                port = free_port()
                env = {**os.environ, "SADTALKER_PORT": str(port), "SADTALKER_CHECKPOINTS": str(tmp / "none"),
                       "SADTALKER_RESULTS": str(tmp / "results"), "SADTALKER_LIVE_SESSIONS": "32",
                       "GRADIO_ANALYTICS_ENABLED": "False"}
                procs.append(start(["SadTalker/app.py"], env, tmp / "model.log"))
                wait_for(f"http://127.0.0.1:{port}/health", procs[-1], tmp / "model.log")
                url = f"ws://127.0.0.1:{port}/live/ws"
            from io import BytesIO

            from PIL import Image
            from skimage import data

            buffer = BytesIO()
            Image.fromarray(data.astronaut()).save(buffer, format="PNG")
            samples = speech(tmp, args.seconds)
            for n in [int(x) for x in args.sessions.split(",")]:
                stats = run(url, buffer.getvalue(), samples, args.size, not args.no_voice, n)
                ok = all("fps" in s and s["fps"] >= 24.5 and s["skipped"] < 0.01 * s["frames"] for s in stats)
                fps = [round(s.get("fps", 0), 2) for s in stats]
                p50 = statistics.median(s["latency_p50_ms"] for s in stats if "fps" in s)
                p95 = max(s["latency_p95_ms"] for s in stats if "fps" in s)
                lag = statistics.median(s["corr_lag_ms"] for s in stats if "fps" in s)
                corr = statistics.median(s["corr"] for s in stats if "fps" in s)
                print(f"size {args.size}, {n} session(s): fps {fps}, skipped {[s.get('skipped') for s in stats]}, "
                      f"sound->picture p50 {p50:.0f} ms, p95 {p95:.0f} ms (newest sound in the frame, sent -> "
                      f"decoded), opening~loudness best lag {lag:.0f} ms (r={corr:.2f}) -> "
                      f"{'holds 25 fps' if ok else 'does NOT hold 25 fps'}; drift: median latency in the first "
                      f"30 s {statistics.median(s['latency_first_30s_ms'] for s in stats if 'fps' in s):.0f} ms, "
                      f"in the last 30 s {statistics.median(s['latency_last_30s_ms'] for s in stats if 'fps' in s):.0f}"
                      f" ms; voice back: {voice_note(stats)}", flush=True)
        finally:
            stop(procs)


if __name__ == "__main__":
    main()
