#!/usr/bin/env python
"""Load check for the web front: N concurrent POST /api/generate on loopback, then follow every job to its end.

    python scripts/load_check.py --start            # starts the model service (landmark engine) and the front
    python scripts/load_check.py --front http://127.0.0.1:5000   # against a front you started

Passes (exit 0) when every request got a job, every job ended done or failed with a stated error, none was
lost, and the front's median API latency (POST /api/generate and GET /api/jobs/<id>, not counting generation)
is under --max-median-ms. Prints the figures.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # live_services: the same service start-up as the end-to-end tests
from live_services import start_product, stop  # noqa: E402

logger = logging.getLogger("load_check")


def make_inputs(folder: Path) -> tuple[Path, Path]:
    """The astronaut portrait and a short espeak-ng clip."""
    from PIL import Image
    from skimage import data

    image = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(image)
    audio = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(audio), "Hello there. This is a load check."], check=True,
                   capture_output=True)
    return image, audio


def multipart(fields: dict[str, str], files: dict[str, Path]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, path in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def call(request: urllib.request.Request, timeout: float = 60) -> tuple[int, dict, float, float | None]:
    """(status, JSON body, client-side ms, server-side ms from Server-Timing)."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, body, headers = reply.status, reply.read(), reply.headers
    except urllib.error.HTTPError as exc:
        status, body, headers = exc.code, exc.read(), exc.headers
    elapsed = (time.perf_counter() - started) * 1000
    server = None
    timing = headers.get("Server-Timing", "")
    if "dur=" in timing:
        server = float(timing.split("dur=")[1].split(";")[0].split(",")[0])
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = {"raw": body[:200].decode("utf-8", "replace")}
    return status, parsed, elapsed, server


def start_services(tmp: Path, procs: list[subprocess.Popen]) -> str:
    """The model service (no checkpoints: the landmark engine) and the front on free ports; returns the front URL."""
    try:
        model, front = start_product(
            tmp, procs, front_ready="/api/health", SADTALKER_MAX_QUEUE="100", RATE_LIMIT="off",
            MAX_QUEUED_PER_ACCOUNT="0", WORKERS=os.environ.get("WORKERS", "4"),
            DATABASE_URL=os.environ.get("LOAD_DATABASE_URL", f"sqlite:///{tmp / 'front.db'}"))
    except RuntimeError as exc:  # a service died or never answered: its log's tail, no traceback
        raise SystemExit(str(exc)) from None
    print(f"started the model service at {model} and the front at {front} (logs in {tmp})")
    return front


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))]


def run(front: str, n: int, image: Path, audio: Path, deadline_s: float, engine: str, api_key: str | None,
        max_median_ms: float) -> bool:
    body, ctype = multipart({"engine": engine}, {"image": image, "audio": audio})
    headers = {"Content-Type": ctype}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    results: list[tuple[int, dict, float, float | None] | None] = [None] * n
    barrier = threading.Barrier(n)

    def post(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(urllib.request.Request(front + "/api/generate", data=body, headers=headers,
                                                     method="POST"))
        except Exception as exc:  # a refused or dropped connection is a finding, not a crash of the check
            results[i] = (0, {"error": f"{type(exc).__name__}: {exc}"}, float("nan"), None)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    burst = time.perf_counter() - t0
    post_ms = [r[2] for r in results if r and r[0] == 202]
    post_server = [r[3] for r in results if r and r[0] == 202 and r[3] is not None]
    accepted = {r[1]["id"] for r in results if r and r[0] == 202}
    refused = [r for r in results if not r or r[0] != 202]

    get_ms: list[float] = []
    get_server: list[float] = []
    final: dict[str, dict] = {}
    lost: set[str] = set()
    end = time.monotonic() + deadline_s
    pending = set(accepted)
    auth = {"Authorization": headers["Authorization"]} if api_key else {}
    while pending and time.monotonic() < end:
        for job_id in sorted(pending):
            status, job, ms, server = call(urllib.request.Request(f"{front}/api/jobs/{job_id}", headers=auth))
            get_ms.append(ms)
            if server is not None:
                get_server.append(server)
            if status == 404:
                lost.add(job_id)
                pending.discard(job_id)
            elif job.get("status") in ("done", "failed"):
                final[job_id] = job
                pending.discard(job_id)
        time.sleep(0.5)
    statuses = Counter(j["status"] for j in final.values())
    errors = Counter(j.get("error") or "(no error text)" for j in final.values() if j["status"] == "failed")
    unexplained = [j for j in final.values() if j["status"] == "failed" and not j.get("error")]
    gen = [j["timings"]["generation_seconds"] for j in final.values() if j["timings"]["generation_seconds"]]
    all_ms = post_ms + get_ms
    print(f"\n{n} concurrent POST /api/generate in {burst:.2f} s: {len(accepted)} accepted (202), "
          f"{len(refused)} not")
    for r in refused[:5]:
        print(f"  refused: HTTP {r[0] if r else '?'} {r[1] if r else ''}")
    print(f"jobs ended: {dict(statuses)}; still running at the deadline: {len(pending)}; lost: {len(lost)}")
    for text, count in errors.most_common():
        print(f"  failed x{count}: {text}")
    if gen:
        print(f"generation time per job: median {statistics.median(gen):.2f} s, max {max(gen):.2f} s")
    print("front API latency (client-side, ms):")
    print(f"  POST /api/generate  median {statistics.median(post_ms):7.1f}  p95 {percentile(post_ms, 95):7.1f}  "
          f"max {max(post_ms):7.1f}  (server-side median {statistics.median(post_server):.1f})"
          if post_ms else "  POST: none accepted")
    if get_ms:
        print(f"  GET /api/jobs/<id>  median {statistics.median(get_ms):7.1f}  p95 {percentile(get_ms, 95):7.1f}  "
              f"max {max(get_ms):7.1f}  (server-side median {statistics.median(get_server):.1f}; "
              f"{len(get_ms)} calls)")
    median_all = statistics.median(all_ms) if all_ms else float("inf")
    print(f"  all API calls       median {median_all:7.1f}  (limit {max_median_ms:g})")
    ok = (len(accepted) == n and not pending and not lost and not unexplained and len(final) == n
          and median_all < max_median_ms)
    print("PASS" if ok else "FAIL")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--front", default=os.environ.get("FRONT_URL", "http://127.0.0.1:5000"))
    parser.add_argument("--start", action="store_true", help="start the model service and the front here")
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("--image", type=Path)
    parser.add_argument("--audio", type=Path)
    parser.add_argument("--engine", default="landmark")
    parser.add_argument("--api-key", default=os.environ.get("FRONT_API_KEY"))
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds to wait for all jobs to end")
    parser.add_argument("--max-median-ms", type=float, default=50.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="load-check-") as tmp_name:
        tmp = Path(tmp_name)
        image, audio = args.image, args.audio
        if image is None or audio is None:
            image, audio = make_inputs(tmp)
        front = args.front
        try:
            if args.start:
                front = start_services(tmp, procs)
            ok = run(front.rstrip("/"), args.n, image, audio, args.deadline, args.engine, args.api_key,
                     args.max_median_ms)
        finally:
            stop(procs)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
