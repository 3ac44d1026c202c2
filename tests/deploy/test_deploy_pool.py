"""The front's replica pool without HTTP (fake replicas): URL parsing and settings, least-busy dispatch, retry on
another replica after a service failure (never after an input rejection), the retry limit, a single URL (a
Kubernetes Service) retried in place; and two fronts on one database: a job runs once, a restart of one front
does not fail the other's running job."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from demofront.config import Config
from demofront.model_client import ModelOutcome, ModelRejectedError, ModelUnavailableError
from demofront.replicas import ReplicaPool, parse_urls
from sadtalker.options import GenerationOptions


def test_parse_urls_normalises_and_rejects():
    assert parse_urls(" http://a:7860, http://b:7860/ ,http://a:7860/") == ("http://a:7860/", "http://b:7860/")
    with pytest.raises(ValueError, match="http"):
        parse_urls("a:7860")
    with pytest.raises(ValueError, match="no model service URL"):
        parse_urls(" , ")


def test_config_reads_sadtalker_urls_before_sadtalker_url():
    env = {"SADTALKER_URLS": "http://m-0.m:7860/,http://m-1.m:7860/", "SADTALKER_URL": "http://x:1/",
           "MODEL_RETRIES": "2"}
    config = Config.from_env(env)
    assert config.model_urls == ("http://m-0.m:7860/", "http://m-1.m:7860/") and config.model_retries == 2
    assert Config.from_env({"SADTALKER_URL": "http://x:1"}).model_urls == ("http://x:1/",)
    with pytest.raises(ValueError, match="MODEL_RETRIES"):
        Config.from_env({"MODEL_RETRIES": "-1"})


class FakeReplica:
    """Behaves per call as told: 'ok', 'die' (service failure), 'reject' (input refused); may hold on a gate."""

    def __init__(self, url: str, plan: list[str] | None = None, gate: threading.Event | None = None) -> None:
        self.url, self.plan, self.gate = url, list(plan or []), gate
        self.calls = 0
        self.started = threading.Event()

    def generate(self, image, audio, options, output, progress):
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "die":
            raise ModelUnavailableError(f"the model service at {self.url} failed or went away during the generation")
        if step == "reject":
            raise ModelRejectedError("no face found in the image")
        return ModelOutcome(engine=f"engine@{self.url}")


class Pool(ReplicaPool):
    """Health from a dict instead of HTTP."""

    def __init__(self, fakes: dict[str, FakeReplica], retries: int = 1, down: set[str] = frozenset()) -> None:
        self.down = set(down)
        super().__init__(list(fakes), retries=retries, client_factory=lambda url, timeout: fakes[url])

    def check(self, replica, force=False):
        replica.up = replica.url not in self.down
        replica.error = None if replica.up else "unreachable (test)"
        return replica.up


def run(pool: ReplicaPool, attempts: list | None = None) -> ModelOutcome:
    log = attempts if attempts is not None else []
    return pool.generate(Path("i.png"), Path("a.wav"), GenerationOptions(), Path("o.mp4"), lambda f, s: None,
                         on_attempt=lambda a: log.append((a.number, a.replica, a.outcome)))


def test_retry_on_another_replica_records_both_attempts():
    fakes = {"http://a/": FakeReplica("http://a/", ["die"]), "http://b/": FakeReplica("http://b/")}
    pool = Pool(fakes)
    log: list = []
    outcome = run(pool, log)
    assert outcome.engine == "engine@http://b/"
    assert log == [(1, "http://a/", "running"), (1, "http://a/", "failed"), (2, "http://b/", "running"),
                   (2, "http://b/", "done")]
    assert pool.replicas[0].up is False and all(r.in_flight == 0 for r in pool.replicas)


def test_retries_zero_and_input_rejections_are_final():
    fakes = {"http://a/": FakeReplica("http://a/", ["die"]), "http://b/": FakeReplica("http://b/")}
    with pytest.raises(ModelUnavailableError, match="http://a/"):
        run(Pool(fakes, retries=0))
    assert fakes["http://b/"].calls == 0
    fakes = {"http://a/": FakeReplica("http://a/", ["reject"]), "http://b/": FakeReplica("http://b/")}
    with pytest.raises(ModelRejectedError, match="no face"):
        run(Pool(fakes, retries=3))
    assert fakes["http://b/"].calls == 0


def test_all_replicas_failing_names_them_and_down_ones_are_skipped():
    fakes = {u: FakeReplica(u, ["die"]) for u in ("http://a/", "http://b/")}
    with pytest.raises(ModelUnavailableError, match="tried 2 times: http://a/, http://b/"):
        run(Pool(fakes, retries=5))
    fakes = {u: FakeReplica(u) for u in ("http://a/", "http://b/")}
    with pytest.raises(ModelUnavailableError, match="the model service is unreachable at http://a/"):
        run(Pool(fakes, down={"http://a/", "http://b/"}))
    pool = Pool(fakes, down={"http://a/"})
    for _ in range(3):
        run(pool)
    assert (fakes["http://a/"].calls, fakes["http://b/"].calls) == (0, 3)


def test_single_url_is_retried_in_place():
    """One URL may be a load-balanced Service: the retry can reach another pod behind it."""
    fakes = {"http://svc/": FakeReplica("http://svc/", ["die"])}
    log: list = []
    assert run(Pool(fakes), log).engine == "engine@http://svc/"
    assert [entry for entry in log if entry[2] != "running"] == [(1, "http://svc/", "failed"),
                                                                 (2, "http://svc/", "done")]


def test_busy_replica_is_avoided():
    """While one replica holds a job, the next jobs all go to the other one."""
    gate, first = threading.Event(), threading.Lock()

    class HoldFirst(FakeReplica):
        def generate(self, *args):
            if first.acquire(blocking=False):  # the very first job, on whichever replica, holds until released
                self.started.set()
                gate.wait(10)
            return super().generate(*args)

    fakes = {u: HoldFirst(u) for u in ("http://a/", "http://b/")}
    pool = Pool(fakes)
    holder = threading.Thread(target=run, args=(pool,))
    holder.start()
    deadline = time.monotonic() + 5
    while not any(f.started.is_set() for f in fakes.values()) and time.monotonic() < deadline:
        time.sleep(0.01)
    busy = next(u for u, f in fakes.items() if f.started.is_set())
    idle = next(u for u in fakes if u != busy)
    others = [run(pool).engine for _ in range(3)]
    gate.set()
    holder.join(10)
    assert others == [f"engine@{idle}"] * 3
    assert [r.dispatched for r in pool.replicas if r.url == busy] == [1]


# -- two fronts on one database -----------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgres"])
def shared_db_url(request, tmp_path) -> str:
    from front_support import database_url

    return database_url(request.param, tmp_path)  # skips PostgreSQL unless TEST_POSTGRES_URL is set


def _two_runners(url, tmp_path, monkeypatch, client_a, client_b):
    from demofront.db import Database
    from demofront.storage import Storage
    from demofront.worker import JobRunner

    db = Database(url)
    db.upgrade()
    storage = Storage(tmp_path / "data")
    monkeypatch.setenv("FRONT_INSTANCE", "front-a")
    a = JobRunner(db, storage, client_a, workers=2)
    monkeypatch.setenv("FRONT_INSTANCE", "front-b")
    b = JobRunner(db, storage, client_b, workers=2)
    return db, storage, a, b


def _queued_job(db, storage, job_id: str) -> None:
    from demofront.models import Job, utcnow

    folder = storage.job_dir(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("image.png", "audio.wav"):
        (folder / name).write_bytes(b"x")
    with db.session() as s:
        s.add(Job(id=job_id, status="queued", progress=0.0, preprocess="crop", still_mode=False, enhancer=False,
                  batch_size=2, size=256, pose_style=0, expression_scale=1.0, seed=0, engine_requested="auto",
                  image_path=f"jobs/{job_id}/image.png", image_size=1, image_sha256="0" * 64, image_format="PNG",
                  image_width=1, image_height=1, audio_path=f"jobs/{job_id}/audio.wav", audio_size=1,
                  audio_sha256="0" * 64, audio_seconds=1.0, created_at=utcnow()))


class CountingClient:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls, self.gate = 0, gate
        self.started = threading.Event()

    def generate(self, image, audio, options, output, progress):
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        raise ModelRejectedError("no face found in the image")  # ends the job without writing a video


def test_two_fronts_run_a_queued_job_once_and_a_restart_spares_the_other_fronts_job(shared_db_url, tmp_path,
                                                                                    monkeypatch):
    from demofront.models import Job

    gate = threading.Event()
    client_a, client_b = CountingClient(gate), CountingClient(gate)
    db, storage, a, b = _two_runners(shared_db_url, tmp_path, monkeypatch, client_a, client_b)
    try:
        job_id = "a" * 32
        _queued_job(db, storage, job_id)
        a.submit(job_id)
        b.submit(job_id)  # e.g. b's start-up recovery re-queues it while a has it in its pool
        assert client_a.started.wait(5) or client_b.started.wait(5)
        time.sleep(0.3)
        assert client_a.calls + client_b.calls == 1  # claimed atomically: exactly one front runs it
        with db.session() as s:
            row = s.get(Job, job_id)
            runner = row.runner
            assert row.status == "running" and runner in ("front-a", "front-b")
        other = b if runner == "front-a" else a
        assert other.recover() == (0, 0)  # the other front restarting does not fail the running job
        with db.session() as s:
            assert s.get(Job, job_id).status == "running"
        gate.set()
        (a if runner == "front-a" else b).wait(job_id, 10)
        with db.session() as s:
            assert s.get(Job, job_id).status == "failed"
    finally:
        gate.set()
        a.shutdown()
        b.shutdown()
        db.dispose()


def test_recover_fails_another_fronts_job_only_once_it_is_stale(shared_db_url, tmp_path, monkeypatch):
    """A replaced pod never comes back for its running jobs: past the longest possible run they are failed."""
    from datetime import timedelta

    from demofront.models import Job, utcnow

    db, storage, a, b = _two_runners(shared_db_url, tmp_path, monkeypatch, CountingClient(), CountingClient())
    try:
        for job_id, age in (("1" * 32, 10), ("2" * 32, 7200)):
            _queued_job(db, storage, job_id)
            with db.session() as s:
                row = s.get(Job, job_id)
                row.status, row.runner, row.started_at = "running", "front-gone", utcnow() - timedelta(seconds=age)
        b.stale_seconds = 3600
        assert b.recover() == (1, 0)
        with db.session() as s:
            assert (s.get(Job, "1" * 32).status, s.get(Job, "2" * 32).status) == ("running", "failed")
    finally:
        a.shutdown()
        b.shutdown()
        db.dispose()


def test_fronts_starting_together_migrate_one_at_a_time(shared_db_url):
    """Two replicas of the front start at once on an empty database: both come up (PostgreSQL: advisory lock)."""
    if shared_db_url.startswith("sqlite"):
        pytest.skip("one SQLite file is not shared between fronts on different machines")
    from demofront.db import Database

    databases = [Database(shared_db_url) for _ in range(3)]
    errors: list[BaseException] = []

    def upgrade(db):
        try:
            db.upgrade()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(db,)) for db in databases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for db in databases:
        db.dispose()
    assert errors == []


def test_a_stopping_front_fails_only_its_own_running_jobs(shared_db_url, tmp_path, monkeypatch):
    from demofront.models import Job, utcnow
    from demofront.worker import RESTART_REASON

    db, storage, a, b = _two_runners(shared_db_url, tmp_path, monkeypatch, CountingClient(), CountingClient())
    try:
        for job_id, runner in (("1" * 32, "front-a"), ("2" * 32, "front-b")):
            _queued_job(db, storage, job_id)
            with db.session() as s:
                row = s.get(Job, job_id)
                row.status, row.runner, row.started_at = "running", runner, utcnow()
        assert a.abandon() == 1
        with db.session() as s:
            mine, other = s.get(Job, "1" * 32), s.get(Job, "2" * 32)
            assert (mine.status, mine.error, other.status) == ("failed", RESTART_REASON, "running")
    finally:
        a.shutdown()
        b.shutdown()
        db.dispose()
