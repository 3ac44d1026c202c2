"""Where inputs and results live: `<DATA_DIR>/jobs/<job id>/{image.<ext>,audio.<ext>,result.mp4,thumb.jpg}`.

Names come from the job id and the decoded format only; an uploaded file name is recorded, never used as a path.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

CHUNK = 1 << 16


@dataclass(frozen=True)
class StoredFile:
    path: Path
    size: int
    sha256: str


class Storage:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir).resolve()
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        (self.root / "incoming").mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        if not (len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / "jobs" / job_id

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))

    def absolute(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if self.root not in path.parents:
            raise ValueError(f"path outside the data folder: {relative!r}")
        return path

    def save_stream(self, stream: BinaryIO, target: Path) -> StoredFile:
        """Copy an upload to `target` while hashing it."""
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with open(target, "wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        return StoredFile(target, size, digest.hexdigest())

    @staticmethod
    def describe(path: Path) -> StoredFile:
        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return StoredFile(path, size, digest.hexdigest())

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def remove_tree(self, path: Path) -> None:
        """A folder under jobs/ or incoming/ (the retention sweep's leftovers); refuses anything else."""
        path = Path(path).resolve()
        if path.parent not in (self.root / "jobs", self.root / "incoming"):
            raise ValueError(f"not a job or scratch folder: {path}")
        shutil.rmtree(path, ignore_errors=True)

    def incoming(self, job_id: str) -> Path:
        """A private scratch folder for a request being checked; renamed to the job folder when accepted."""
        path = self.root / "incoming" / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path
