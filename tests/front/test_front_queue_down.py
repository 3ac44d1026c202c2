"""A front whose broker is down refuses a submission with 503 and keeps nothing: no row, no files."""
from __future__ import annotations

from live_services import free_port

from demofront import create_app
from demofront.config import Config
from demofront.models import Job


def test_submission_with_the_broker_down_is_503_and_leaves_nothing(tmp_path, portrait_path, speech_path):
    config = Config(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'front.db'}",
                    queue_url=f"redis://127.0.0.1:{free_port()}/0", testing=True)
    app = create_app(config)
    try:
        front = app.extensions["demofront"]
        with open(portrait_path, "rb") as image, open(speech_path, "rb") as audio:
            reply = app.test_client().post("/api/generate", data={"image": (image, "face.png"),
                                                                  "audio": (audio, "speech.wav")})
        assert reply.status_code == 503, reply.get_json()
        assert "queue is unreachable" in reply.get_json()["error"]
        with front.db.session() as s:
            assert s.query(Job).count() == 0
        jobs_dir = front.storage.root / "jobs"
        assert not jobs_dir.exists() or not any(jobs_dir.iterdir())
        incoming = front.storage.root / "incoming"
        assert not incoming.exists() or not any(incoming.iterdir())
    finally:
        front.close()
