"""Run as a script by tests/test_front_uploads.py, one upload per process: build the front (a model client that is
never reached), warm it up with a portrait and a silent clip (decoded in full, refused as silent: every reader is
loaded), then POST the upload under test and print, as JSON, the answer and the process's peak resident memory
(ru_maxrss) before and after it.

    python tests/front/front_memory_probe.py DATA_DIR PORTRAIT SILENT_CLIP IMAGE AUDIO
"""
from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "DemoFront"), str(ROOT / "SadTalker")]


class Unreachable:
    """Uploads that pass the checks are queued; this probe is about the checks, so nothing is generated."""

    def generate(self, *args, **kwargs):
        from demofront.model_client import ModelUnavailableError

        raise ModelUnavailableError("no model service in the memory probe")


def post(client, image: Path, audio: Path):
    with open(image, "rb") as i, open(audio, "rb") as a:
        return client.post("/api/generate", data={"image": (i, image.name), "audio": (a, audio.name)},
                           content_type="multipart/form-data")


def main(data_dir: str, portrait: str, silent: str, image: str, audio: str) -> None:
    from demofront import create_app
    from demofront.config import Config

    config = Config(database_url=f"sqlite:///{Path(data_dir) / 'probe.db'}", data_dir=Path(data_dir),
                    secret_key="probe", rate_limit="off", testing=True, queue_url="memory://")
    app = create_app(config, model_client=Unreachable())
    client = app.test_client()
    warm = post(client, Path(portrait), Path(silent))
    assert warm.status_code == 400 and "silent" in warm.json["error"], warm.json
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reply = post(client, Path(image), Path(audio))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    app.extensions["demofront"].close()
    print(json.dumps({"status": reply.status_code, "body": reply.get_json(silent=True),
                      "peak_before_kb": before, "peak_after_kb": after}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
