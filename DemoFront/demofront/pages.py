"""HTML pages: the upload form, a job's page (live status, video, download, generate again), the history."""
from __future__ import annotations

import math
from typing import Any

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from sqlalchemy import func, select

from sadtalker.options import ENGINE_CHOICES, NUM_POSE_STYLES, PREPROCESS_MODES, SIZES

from .api import describe, remove_job, requester, visible_job
from .auth import require_user, require_user_or_anonymous
from .models import Job

bp = Blueprint("pages", __name__)


def front() -> Any:
    return current_app.extensions["demofront"]


def form_choices() -> dict[str, Any]:
    from . import examples

    return {"preprocess_modes": PREPROCESS_MODES, "sizes": SIZES, "engines": ENGINE_CHOICES,
            "max_pose": NUM_POSE_STYLES - 1, "config": front().config, "examples": examples}


@bp.get("/")
def index() -> str:
    return render_template("index.html", defaults=None, **form_choices())


@bp.post("/")
def submit() -> Any:
    require_user_or_anonymous()
    job = front().jobs.create(request.form, request.files, requester())
    return redirect(url_for("pages.job_page", job_id=job.id), 303)


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    job = visible_job(job_id)
    return render_template("job.html", job=job, info=describe(job), **form_choices())


@bp.post("/jobs/<job_id>/again")
def again(job_id: str) -> Any:
    source = visible_job(job_id)
    require_user_or_anonymous()
    job = front().jobs.create(request.form, {}, requester(), reuse_inputs_of=source)
    return redirect(url_for("pages.job_page", job_id=job.id), 303)


@bp.post("/jobs/<job_id>/delete")
def delete(job_id: str) -> Any:
    remove_job(visible_job(job_id))
    return redirect(url_for("pages.history") if g.user else url_for("pages.index"), 303)


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> Any:
    job = visible_job(job_id)
    if job.status in ("queued", "running"):
        front().jobs.cancel(job.id)
    return redirect(url_for("pages.job_page", job_id=job.id), 303)


@bp.get("/history")
def history() -> str:
    user = require_user()
    size = front().config.page_size
    with front().db.session() as s:
        total = s.scalar(select(func.count(Job.id)).where(Job.owner_id == user.id)) or 0
        pages = max(1, math.ceil(total / size))
        page = min(max(1, request.args.get("page", 1, type=int) or 1), pages)
        jobs = list(s.scalars(select(Job).where(Job.owner_id == user.id).order_by(Job.created_at.desc())
                              .offset((page - 1) * size).limit(size)))
    return render_template("history.html", jobs=jobs, page=page, pages=pages, total=total)
