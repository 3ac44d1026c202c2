#!/usr/bin/env python
"""Time from submission to the first playable fragment, as a client sees it: POST /api/generate, then read
GET /api/jobs/<id>/stream until it holds the moov and the first complete moof+mdat; then the rest of the stream
(saved and checked with ffmpeg) and the job's end.

    python scripts/bench_stream.py --start                 # starts the model service (landmark) and the front
    python scripts/bench_stream.py --front http://127.0.0.1:5000 --size 512 --seconds 10 --runs 3
    # the SadTalker engine on random weights in the official layout (written to DIR once, ~0.8 GB):
    python scripts/bench_stream.py --start --engine sadtalker --random-weights /tmp/st-ckpt --size 256 \
        --seconds 0.6 --runs 0

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


def random_weights(folder: Path) -> dict[str, str]:
    """SadTalker's files with random weights in the official layout, written once. No facexlib weights (random
    ones would find no face): the landmarks come from the shipped face mesh, as the end-to-end tests run it."""
    from sadtalker.engines.sadtalker.random_weights import write_official_file
    from sadtalker.weights import MAPPING_CROP, MAPPING_FULL, SADTALKER_FILES

    if not (folder / "done").exists():
        for seed, name in enumerate((SADTALKER_FILES[256], MAPPING_CROP, MAPPING_FULL)):
            write_official_file(name, folder, seed=seed * 10)
        (folder / "done").touch()
    return {"SADTALKER_CHECKPOINTS": str(folder), "SADTALKER_GFPGAN_WEIGHTS": str(folder / "no-facexlib-weights")}


def one_job(front: str, image: Path, audio: Path, size: int, out: Path, engine: str = "landmark") -> dict:
    started = time.perf_counter()
    job = post_job(front, {"engine": engine, "size": str(size), "preprocess": "crop"},
                   {"image": image, "audio": audio})
    posted = time.perf_counter()
    body = bytearray()
    first = None
    with urllib.request.urlopen(front + job["stream_url"], timeout=1800) as reply:
        headers = dict(reply.headers)
        while chunk := reply.read1(1 << 16):
            body += chunk
            if first is None:
                found = boxes(bytes(body))
                if b"moov" in found and b"mdat" in found:
                    first = time.perf_counter()
    streamed = time.perf_counter()
    out.write_bytes(body)
    done = wait_job(front, job["id"], timeout=1800, poll_seconds=0.05)
    if done["status"] != "done":
        raise SystemExit(f"job {job['id']} {done['status']}: {done['error']}")
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
    parser.add_argument("--runs", type=int, default=3, help="timed runs after the warm-up job")
    parser.add_argument("--engine", default="landmark", choices=("landmark", "sadtalker"))
    parser.add_argument("--random-weights", type=Path, help="with --start: SadTalker random weights in this folder")
    args = parser.parse_args()
    if not args.front and not args.start:
        parser.error("give --front URL or --start")
    procs: list = []
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            extra = random_weights(args.random_weights) if args.random_weights else {}
            front = args.front.rstrip("/") if args.front else start_product(tmp, procs, **extra)[1]
            image, audio = make_inputs(tmp, args.seconds)
            results = [one_job(front, image, audio, args.size, tmp / f"run{i}.mp4", args.engine)
                       for i in range(args.runs + 1)]
        finally:
            stop(procs)
    for i, r in enumerate(results):
        print(("warm-up " if i == 0 else f"run {i}   ") + json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                                                      for k, v in r.items()}))
    timed = results[1:] or results
    firsts = [r["first_fragment_s"] for r in timed]
    ends = [r["stream_end_s"] for r in timed]
    print(f"{args.engine}, {args.seconds:g} s clip, size {args.size}: first playable fragment at the client "
          f"{statistics.median(firsts):.3f} s after submission (median of {len(firsts)}; min {min(firsts):.3f}, "
          f"max {max(firsts):.3f}); whole stream {statistics.median(ends):.3f} s")


if __name__ == "__main__":
    main()
