#!/usr/bin/env python
"""Time from submission to the first playable fragment, as a client sees it: POST /api/generate, then read
GET /api/jobs/<id>/stream until it holds the moov and the first complete moof+mdat; then the rest of the stream
(saved and checked with ffmpeg) and the job's end.

    python scripts/bench_stream.py --start                 # starts the model service (landmark) and the front
    python scripts/bench_stream.py --front http://127.0.0.1:5000 --size 512 --seconds 10 --runs 3

The first job warms the services (engine load, gradio_client connection) and is reported apart.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "SadTalker"))
from live_services import post_job, start_product, stop, wait_job  # noqa: E402


def make_inputs(folder: Path, seconds: float) -> tuple[Path, Path]:
    """The astronaut portrait and espeak-ng speech padded or cut to exactly `seconds`."""
    import subprocess

    import numpy as np
    import soundfile
    from PIL import Image
    from skimage import data

    image = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(image)
    raw = folder / "speech_raw.wav"
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(raw),
                    "The quick brown fox jumps over the lazy dog. Then it rests for a while. Talking heads need "
                    "open vowels, like ah, oh, and ee. Good night and good luck."], check=True, capture_output=True)
    samples, rate = soundfile.read(raw, dtype="float32")
    n = int(seconds * rate)
    samples = np.pad(samples, (0, max(0, n - len(samples))))[:n]
    audio = folder / "speech.wav"
    soundfile.write(audio, samples, rate)
    return image, audio


def boxes(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        if size < 8 or pos + size > len(data):
            break
        out.append(data[pos + 4:pos + 8])
        pos += size
    return out


def one_job(front: str, image: Path, audio: Path, size: int, out: Path) -> dict:
    started = time.perf_counter()
    job = post_job(front, {"engine": "landmark", "size": str(size), "preprocess": "crop"},
                   {"image": image, "audio": audio})
    posted = time.perf_counter()
    body = bytearray()
    first = None
    with urllib.request.urlopen(front + job["stream_url"], timeout=120) as reply:
        headers = dict(reply.headers)
        while chunk := reply.read1(1 << 16):
            body += chunk
            if first is None:
                found = boxes(bytes(body))
                if b"moov" in found and b"mdat" in found:
                    first = time.perf_counter()
    streamed = time.perf_counter()
    out.write_bytes(body)
    done = wait_job(front, job["id"], timeout=120, poll_seconds=0.05)
    from sadtalker.io.video import probe

    info = probe(out)
    return {"job": job["id"], "post_s": posted - started, "first_fragment_s": (first or streamed) - started,
            "stream_end_s": streamed - started, "status": done["status"], "bytes": len(body),
            "transfer": headers.get("Transfer-Encoding"), "video": info.video_codec, "audio": info.audio_codec,
            "frames": info.num_frames, "size": f"{info.width}x{info.height}", "seconds": round(info.video_seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--front", help="a running front's URL")
    parser.add_argument("--start", action="store_true", help="start the model service and the front here")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not args.front and not args.start:
        parser.error("give --front URL or --start")
    procs: list = []
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            front = args.front.rstrip("/") if args.front else start_product(tmp, procs)[1]
            image, audio = make_inputs(tmp, args.seconds)
            results = [one_job(front, image, audio, args.size, tmp / f"run{i}.mp4") for i in range(args.runs + 1)]
        finally:
            stop(procs)
    for i, r in enumerate(results):
        print(("warm-up " if i == 0 else f"run {i}   ") + json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                                                      for k, v in r.items()}))
    firsts = [r["first_fragment_s"] for r in results[1:]]
    ends = [r["stream_end_s"] for r in results[1:]]
    print(f"landmark, {args.seconds:g} s clip, size {args.size}: first playable fragment at the client "
          f"{statistics.median(firsts):.3f} s after submission (median of {len(firsts)}; min {min(firsts):.3f}, "
          f"max {max(firsts):.3f}); whole stream {statistics.median(ends):.3f} s")


if __name__ == "__main__":
    main()
