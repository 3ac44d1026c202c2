"""Limits on what a request may upload, shared by the model service and the web front under the same names."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from sadtalker.errors import InvalidInputError


@dataclass(frozen=True)
class InputLimits:
    """Checked from file headers before anything is decoded (a small file can hold a huge picture or clip)."""

    max_upload_mb: float = 50.0          # MAX_UPLOAD_MB: any one uploaded file
    max_audio_seconds: float = 300.0     # MAX_AUDIO_SECONDS: the driving audio (and idle length, reference videos)
    max_image_side: int = 4096           # MAX_IMAGE_SIDE: the portrait's width and height
    max_image_pixels: int = 4096 * 4096  # MAX_IMAGE_PIXELS: width x height (also Pillow's decompression-bomb limit)

    def __post_init__(self) -> None:
        for name, value in (("MAX_UPLOAD_MB", self.max_upload_mb), ("MAX_AUDIO_SECONDS", self.max_audio_seconds),
                            ("MAX_IMAGE_SIDE", self.max_image_side), ("MAX_IMAGE_PIXELS", self.max_image_pixels)):
            if not value > 0:
                raise InvalidInputError(f"{name} must be positive; got {value!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "InputLimits":
        env = os.environ if environ is None else environ
        d = cls()

        def number(name: str, kind: type, default: float) -> float:
            raw = (env.get(name) or "").strip()
            if not raw:
                return default
            try:
                return kind(raw)
            except ValueError:
                raise InvalidInputError(f"{name} must be a number; got {raw!r}") from None

        return cls(max_upload_mb=number("MAX_UPLOAD_MB", float, d.max_upload_mb),
                   max_audio_seconds=number("MAX_AUDIO_SECONDS", float, d.max_audio_seconds),
                   max_image_side=int(number("MAX_IMAGE_SIDE", int, d.max_image_side)),
                   max_image_pixels=int(number("MAX_IMAGE_PIXELS", int, d.max_image_pixels)))
