"""The JSON API: generate, job status (with queue position and estimated start), cancel, the video (with Range),
deletion, and the OpenAPI description."""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request, send_file, url_for
from sqlalchemy import func, select

from .auth import require_user, require_user_or_anonymous
from .errors import ApiError
from .jobs import Requester, can_see, estimated_start, iso, job_to_dict, queue_position
from .models import Job

logger = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")
MAX_PAGE = 100_000  # keeps the row offset far inside the database's integer range


def front() -> Any:
    return current_app.extensions["demofront"]


def requester() -> Requester:
    return Requester(user=g.user, client_addr=request.remote_addr, user_agent=request.headers.get("User-Agent"),
                     api_key_id=g.get("api_key_id") if g.get("auth_via") == "key" else None)


def job_urls(job: Job) -> dict[str, Any]:
    stored = job.expired_at is None  # the retention sweep removed an expired job's files
    return {
        "status_url": url_for("api.get_job", job_id=job.id),
        "page_url": url_for("pages.job_page", job_id=job.id),
        "video_url": url_for("api.job_video", job_id=job.id) if job.status == "done" and stored else None,
        # fragmented MP4 while it renders (playable from the first fragment), the whole stream once done
        "stream_url": url_for("stream.job_stream", job_id=job.id) if job.status != "failed" and stored else None,
        "image_url": url_for("api.job_file", job_id=job.id, kind="image") if stored else None,
        "audio_url": url_for("api.job_file", job_id=job.id, kind="audio") if stored else None,
        "thumb_url": url_for("api.job_file", job_id=job.id, kind="thumb") if job.thumb_path and stored else None,
    }


def refuse_if_expired(job: Job, what: str) -> None:
    if job.expired_at is not None:
        days = front().config.job_retention_days
        raise ApiError(410, f"the {what} of job {job.id} has expired (files are kept {days:g} days after a job "
                            "ends)", extra={"expired_at": iso(job.expired_at)})


def describe(job: Job, with_estimate: bool = True) -> dict[str, Any]:
    from .models import JobAttempt

    with front().db.session() as s:
        position = queue_position(s, job)
        start = None
        if position is not None and with_estimate:
            try:
                workers = front().queue.stats().workers
            except Exception as exc:  # the broker is away: the status still answers, without an estimate
                logger.warning("queue statistics unavailable: %s", exc)
                workers = 0
            start = estimated_start(s, position, workers)
        attempts = [{"number": a.number, "replica": a.replica, "outcome": a.outcome, "error": a.error,
                     "started_at": iso(a.started_at), "finished_at": iso(a.finished_at)}
                    for a in s.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id)
                                       .order_by(JobAttempt.number))]
    body = job_to_dict(job, job_urls(job), position, start)
    body["attempts"] = attempts  # one per run by a worker (a retry or a redelivery after a worker died adds one)
    return body


def describe_for_webhook(app: Any, job: Job) -> dict[str, Any]:
    """The job's JSON as GET /api/jobs/<id> gives it, outside a request (the webhook deliveries)."""
    with app.test_request_context("/"):
        return describe(job, with_estimate=False)


def visible_job(job_id: str) -> Job:
    """The job if this requester may see it; 404 otherwise (also for someone else's job)."""
    if not (len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)):
        raise ApiError(404, f"no job {job_id}")
    with front().db.session() as s:
        job = s.get(Job, job_id)
    if job is None or not can_see(job, g.user):
        raise ApiError(404, f"no job {job_id}")
    return job


def wants_wait() -> bool:
    return request.args.get("wait", "").lower() in ("1", "true", "yes")


@bp.post("/generate")
def generate() -> Any:
    who = requester()
    require_user_or_anonymous()
    job = front().jobs.create(request.form, request.files, who)
    if wants_wait():
        front().wait(job.id, front().config.wait_timeout_seconds)
        job = visible_job(job.id)
        if job.status == "done":
            return _send_video(job)
        if job.status == "cancelled":
            raise ApiError(409, "the job was cancelled", extra={"job": describe(job)})
        if job.status == "failed":
            status = 422 if job.error_kind == "input" else 502
            raise ApiError(status, job.error or "the generation failed", extra={"job": describe(job)})
    body = describe(job)
    response = jsonify(body)
    response.status_code = 202
    response.headers["Location"] = body["status_url"]
    return response


@bp.get("/jobs")
def list_jobs() -> Response:
    user = require_user()
    page = min(MAX_PAGE, max(1, request.args.get("page", 1, type=int) or 1))
    per_page = min(100, max(1, request.args.get("per_page", 20, type=int) or 20))
    with front().db.session() as s:
        total = s.scalar(select(func.count(Job.id)).where(Job.owner_id == user.id)) or 0
        rows = list(s.scalars(select(Job).where(Job.owner_id == user.id).order_by(Job.created_at.desc())
                              .offset((page - 1) * per_page).limit(per_page)))
    return jsonify({"jobs": [job_to_dict(j, job_urls(j)) for j in rows], "page": page, "per_page": per_page,
                    "total": total})


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    return jsonify(describe(visible_job(job_id)))


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    """A queued job never runs; a running one stops at its worker's next progress check and ends `cancelled`.
    202 while a running job is being stopped, 200 once cancelled, 409 for a job that already ended."""
    job = visible_job(job_id)
    if job.status in ("done", "failed"):
        raise ApiError(409, f"job {job_id} already ended ({job.status})", extra={"job_status": job.status})
    front().jobs.cancel(job.id)
    job = visible_job(job.id)
    response = jsonify(describe(job))
    response.status_code = 200 if job.status == "cancelled" else 202
    return response


@bp.delete("/jobs/<job_id>")
def delete_job(job_id: str) -> Response:
    job = visible_job(job_id)  # owned jobs: only their owner gets this far
    remove_job(job)
    return jsonify({"deleted": job.id})


def remove_job(job: Job) -> None:
    with front().db.session() as s:
        row = s.get(Job, job.id)
        if row is not None:
            s.delete(row)
    front().storage.delete_job(job.id)
    logger.info("job %s deleted", job.id)


@bp.get("/jobs/<job_id>/video")
def job_video(job_id: str) -> Response:
    job = visible_job(job_id)
    if job.status != "done" or not job.output_path:
        raise ApiError(409, f"job {job_id} has no video yet (status: {job.status})",
                       extra={"job_status": job.status})
    return _send_video(job)


def _send_video(job: Job) -> Response:
    refuse_if_expired(job, "video")
    path = front().storage.absolute(job.output_path)
    if not path.is_file():
        raise ApiError(410, f"the video of job {job.id} is no longer stored")
    download = request.args.get("download", "").lower() in ("1", "true", "yes")
    return send_file(path, mimetype="video/mp4", conditional=True, as_attachment=download,
                     download_name=f"talking-head-{job.id[:8]}.mp4", max_age=0)


@bp.get("/jobs/<job_id>/<any(image, audio, thumb):kind>")
def job_file(job_id: str, kind: str) -> Response:
    job = visible_job(job_id)
    refuse_if_expired(job, kind)
    relative = {"image": job.image_path, "audio": job.audio_path, "thumb": job.thumb_path}[kind]
    if not relative:
        raise ApiError(404, f"job {job_id} has no {kind}")
    path = front().storage.absolute(relative)
    if not path.is_file():
        raise ApiError(410, f"the {kind} of job {job_id} is no longer stored")
    mimetypes = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "bmp": "image/bmp",
                 "gif": "image/gif", "tiff": "image/tiff", "wav": "audio/wav", "flac": "audio/flac",
                 "ogg": "audio/ogg", "mp3": "audio/mpeg", "m4a": "audio/mp4", "webm": "audio/webm"}
    return send_file(path, mimetype=mimetypes.get(path.suffix.lstrip("."), "application/octet-stream"),
                     conditional=True, max_age=0)


@bp.get("/openapi.json")
def openapi() -> Response:
    from .openapi import spec

    return jsonify(spec(front().config))


@bp.get("/health")
def health() -> Response:
    with front().db.session() as s:
        counts = dict(s.execute(select(Job.status, func.count(Job.id)).group_by(Job.status)).all())
    # jobs_unfinished (waiting plus running) is what KEDA scales the model pods on (deploy/k8s/base/model-keda.yaml)
    unfinished = int(counts.get("queued", 0)) + int(counts.get("running", 0))
    return jsonify({"status": "ok", "database": front().db.dialect, "jobs": counts, "jobs_unfinished": unfinished})
