"""Health routes for load balancers and Kubernetes probes: `/livez` (the process answers) and `/healthz`
(database and task queue reachable, queue length, live model workers; 503 when the front cannot take jobs)."""
from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import func, select, text

from .models import Job

logger = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/livez")
def livez() -> Response:
    """Liveness: answers while the web process serves requests; never depends on the database or the models,
    so a model outage does not make Kubernetes restart every front."""
    return jsonify({"status": "ok"})


@bp.get("/healthz")
def healthz() -> Response:
    """Readiness: 200 when the database and the queue's broker answer, else 503 (with why). No live model worker
    is reported but does not make the front unready: jobs wait in the queue for one."""
    front = current_app.extensions["demofront"]
    body: dict[str, Any] = {"status": "ok"}
    problems: list[str] = []
    started = time.perf_counter()
    try:
        with front.db.session() as s:
            s.execute(text("SELECT 1"))
            counts = dict(s.execute(select(Job.status, func.count(Job.id))
                                    .where(Job.status.in_(("queued", "running"))).group_by(Job.status)).all())
        body["database"] = {"ok": True, "dialect": front.db.dialect,
                            "ms": round((time.perf_counter() - started) * 1000, 1)}
        body["queue"] = {"queued": int(counts.get("queued", 0)), "running": int(counts.get("running", 0))}
    except Exception as exc:  # any driver error means "not reachable"; the probe must answer regardless
        logger.warning("healthz: database check failed: %s", exc)
        body["database"] = {"ok": False, "dialect": front.db.dialect, "error": f"{type(exc).__name__}: {exc}"[:300]}
        problems.append("database unreachable")
    try:
        stats = front.queue.stats()
        body["broker"] = {"ok": True, "waiting": stats.queued, "retrying": stats.delayed}
        body["workers"] = {"live": stats.workers}
    except Exception as exc:
        logger.warning("healthz: queue check failed: %s", exc)
        body["broker"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        problems.append("task queue unreachable")
    if problems:
        body["status"] = "unhealthy"
        body["problems"] = problems
    response = jsonify(body)
    response.status_code = 503 if problems else 200
    response.headers["Cache-Control"] = "no-store"
    return response
