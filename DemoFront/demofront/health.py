"""Health routes for load balancers and Kubernetes probes: `/livez` (the process answers) and `/healthz`
(database reachable, model replicas reachable, queue length; 503 when the front cannot do its work)."""
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
    """Readiness: 200 when the database answers and at least one model replica is up, else 503 (with why)."""
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
    pool_health = getattr(front.client, "health", None)
    if callable(pool_health):
        replicas = pool_health()
        body["model_replicas"] = replicas
        up = sum(1 for r in replicas if r["up"])
        body["models"] = {"up": up, "total": len(replicas)}
        if up == 0:
            problems.append("no model replica reachable")
    if problems:
        body["status"] = "unhealthy"
        body["problems"] = problems
    response = jsonify(body)
    response.status_code = 503 if problems else 200
    response.headers["Cache-Control"] = "no-store"
    return response
