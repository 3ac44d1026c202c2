"""The tables: users, their API keys, and generation jobs (one row per request, kept after it ends)."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sadtalker.options import MAX_SEED, GenerationOptions

JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATUSES = ("done", "failed", "cancelled")
# The options the front offers, each stored in a column of its own (so they can be grouped on); the column is named
# like the option except `engine`, whose column says what was asked (`engine` is what ran).
FRONT_OPTIONS = ("preprocess", "still_mode", "enhancer", "batch_size", "size", "pose_style", "expression_scale",
                 "seed", "engine")
OPTION_COLUMN_NAMES = {"engine": "engine_requested"}


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
    # signs webhook deliveries of jobs made with this key (X-DemoFront-Signature); shown once, with the key
    webhook_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)


def _option_column(option: dataclasses.Field) -> Any:
    """A column for one GenerationOptions field, typed from its default (the seed needs 64 bits)."""
    default = option.default
    if isinstance(default, bool):
        return mapped_column(Boolean, nullable=False)
    if isinstance(default, int):
        return mapped_column(BigInteger if option.name == "seed" and MAX_SEED > 2**31 else Integer, nullable=False)
    if isinstance(default, float):
        return mapped_column(Float, nullable=False)
    if isinstance(default, (str, Enum)):
        return mapped_column(String(16), nullable=False)
    raise TypeError(f"no column type for option {option.name} (default {default!r})")


# The option columns, generated from the one option class (sadtalker/options.py) rather than declared again here.
JobOptionColumns = type("JobOptionColumns", (), {
    OPTION_COLUMN_NAMES.get(f.name, f.name): _option_column(f)
    for f in dataclasses.fields(GenerationOptions) if f.name in FRONT_OPTIONS})


class Job(JobOptionColumns, Base):
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
    # options: one column per FRONT_OPTIONS entry, from JobOptionColumns
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
    runner: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the worker that ran (runs) it
    # the task queue (demofront/tasks.py): tries so far, the message, a cancel asked for while it runs
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    message_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # webhook (demofront/webhooks.py): where to POST the job when it ends, signed with the API key's secret
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"), nullable=True)
    callback_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    webhook_status: Mapped[str | None] = mapped_column(String(16), nullable=True)  # pending | delivered | failed
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    webhook_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # when the retention sweep removed the job's files (JOB_RETENTION_DAYS); the row stays as history
    expired_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    def options(self) -> dict[str, Any]:
        return {name: getattr(self, OPTION_COLUMN_NAMES.get(name, name)) for name in FRONT_OPTIONS}

    def set_options(self, options: GenerationOptions) -> None:
        values = options.to_dict()
        for name in FRONT_OPTIONS:
            setattr(self, OPTION_COLUMN_NAMES.get(name, name), values[name])


class JobAttempt(Base):
    """One try of a job by one worker (model replica); a job redelivered after its worker died has two."""

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    replica: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))  # running | done | failed | retry | lost | cancelled
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
