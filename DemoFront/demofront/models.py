"""The tables: users, their API keys, and generation jobs (one row per request, kept after it ends)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_STATUSES = ("queued", "running", "done", "failed")
MAX_SEED = 2**63 - 1  # the seed column is a signed 64-bit integer


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Sessions carry the generation they were made in; signing out bumps it, so every earlier cookie is void.
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ApiKey(Base):
    """Only the key's sha256 is stored; the key itself is shown once, when it is made."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Job(Base):
    """One generation: what was asked (options, inputs as uploaded), what was stored, and how it went."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_created", "owner_id", "created_at"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_client_created", "client_addr", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # options (GenerationOptions, one column each so they can be grouped on)
    preprocess: Mapped[str] = mapped_column(String(16))
    still_mode: Mapped[bool] = mapped_column(Boolean)
    enhancer: Mapped[bool] = mapped_column(Boolean)
    batch_size: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    pose_style: Mapped[int] = mapped_column(Integer)
    expression_scale: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(BigInteger)  # 0..MAX_SEED
    engine_requested: Mapped[str] = mapped_column(String(16))
    # inputs
    image_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    image_path: Mapped[str] = mapped_column(String(255))
    image_size: Mapped[int] = mapped_column(Integer)
    image_sha256: Mapped[str] = mapped_column(String(64))
    image_format: Mapped[str] = mapped_column(String(16))
    image_width: Mapped[int] = mapped_column(Integer)
    image_height: Mapped[int] = mapped_column(Integer)
    audio_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    audio_path: Mapped[str] = mapped_column(String(255))
    audio_size: Mapped[int] = mapped_column(Integer)
    audio_sha256: Mapped[str] = mapped_column(String(64))
    audio_seconds: Mapped[float] = mapped_column(Float)
    audio_source: Mapped[str] = mapped_column(String(16), default="upload")  # upload | tts
    tts_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    tts_voice: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tts_language: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # who asked
    client_addr: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # outcome
    engine: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)  # input | service | restart | internal
    output_path: Mapped[str | None] = mapped_column(String(255), nullable=True)
    output_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    thumb_path: Mapped[str | None] = mapped_column(String(255), nullable=True)
    generation_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    runner: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the front instance that ran it
    # when the retention sweep removed the job's files (JOB_RETENTION_DAYS); the row stays as history
    expired_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    OPTION_FIELDS = ("preprocess", "still_mode", "enhancer", "batch_size", "size", "pose_style",
                     "expression_scale", "seed")

    def options(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.OPTION_FIELDS}
        values["engine"] = self.engine_requested
        return values


class JobAttempt(Base):
    """One try of a job on one model replica; a job retried after a replica died has two."""

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    replica: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))  # running | done | failed
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
