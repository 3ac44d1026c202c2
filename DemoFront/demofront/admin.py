"""Insight for admins, computed in SQL from the job table: volume per day and status, generation-time
percentiles per engine and option set, failure reasons, busiest users."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g, jsonify, render_template
from sqlalchemy import Integer, and_, case, cast, desc, func, literal, select

from .auth import require_user
from .errors import ApiError, wants_json
from .models import Job, User

bp = Blueprint("admin", __name__)


def require_admin() -> None:
    user = require_user()
    if not user.is_admin:
        raise ApiError(403, "this page is for administrators")


def percentiles(session: Any) -> list[dict[str, Any]]:
    """Nearest-rank median and 95th percentile of generation time per (engine, option set), in SQL with window
    functions (the same query on SQLite and PostgreSQL)."""
    group = (Job.engine, Job.preprocess, Job.size, Job.enhancer, Job.still_mode)
    ranked = (
        select(*group, Job.generation_seconds.label("seconds"),
               func.row_number().over(partition_by=group, order_by=Job.generation_seconds).label("rn"),
               func.count().over(partition_by=group).label("n"))
        .where(Job.status == "done", Job.generation_seconds.is_not(None))
        .subquery()
    )
    # nearest rank: ceil(p * n) in integer arithmetic, (p100 * n + 99) // 100
    rank50 = (cast(ranked.c.n, Integer) * 50 + 99) // 100
    rank95 = (cast(ranked.c.n, Integer) * 95 + 99) // 100
    query = (
        select(ranked.c.engine, ranked.c.preprocess, ranked.c.size, ranked.c.enhancer, ranked.c.still_mode,
               func.max(ranked.c.n).label("n"),
               func.max(case((ranked.c.rn == rank50, ranked.c.seconds))).label("p50"),
               func.max(case((ranked.c.rn == rank95, ranked.c.seconds))).label("p95"))
        .group_by(ranked.c.engine, ranked.c.preprocess, ranked.c.size, ranked.c.enhancer, ranked.c.still_mode)
        .order_by(desc("n"))
    )
    return [dict(row._mapping) for row in session.execute(query)]


def insight(session: Any) -> dict[str, Any]:
    day = func.date(Job.created_at)
    per_day = session.execute(
        select(day.label("day"), Job.status, func.count(Job.id).label("jobs"))
        .group_by(day, Job.status).order_by(desc(day), Job.status)
    ).all()
    failures = session.execute(
        select(Job.error, func.count(Job.id).label("jobs")).where(Job.status == "failed")
        .group_by(Job.error).order_by(desc("jobs"), Job.error).limit(20)
    ).all()
    busiest = session.execute(
        select(User.username, func.count(Job.id).label("jobs"),
               func.sum(case((Job.status == "failed", 1), else_=0)).label("failed"),
               func.sum(Job.audio_seconds).label("audio_seconds"))
        .join(User, User.id == Job.owner_id).group_by(User.username).order_by(desc("jobs"), User.username).limit(10)
    ).all()
    anonymous = session.scalar(select(func.count(Job.id)).where(Job.owner_id.is_(None))) or 0
    return {
        "per_day": [{"day": str(r.day), "status": r.status, "jobs": r.jobs} for r in per_day],
        "generation_seconds": percentiles(session),
        "failures": [{"error": r.error, "jobs": r.jobs} for r in failures],
        "busiest_users": [{"username": r.username, "jobs": r.jobs, "failed": int(r.failed or 0),
                           "audio_seconds": round(float(r.audio_seconds or 0), 1)} for r in busiest],
        "anonymous_jobs": anonymous,
    }


@bp.get("/admin/insight")
def insight_page() -> Any:
    require_admin()
    with current_app.extensions["demofront"].db.session() as s:
        data = insight(s)
    return render_template("insight.html", data=data)


@bp.get("/api/admin/insight")
def insight_api() -> Any:
    require_admin()
    with current_app.extensions["demofront"].db.session() as s:
        return jsonify(insight(s))
