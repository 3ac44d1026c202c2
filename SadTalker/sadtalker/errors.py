"""Errors a user can act on. Each names what was wrong and, where it helps, how to fix it."""
from __future__ import annotations

DOWNLOAD_HINT = "bash scripts/download_models.sh"


class TalkingHeadError(Exception):
    """Base class: everything the service turns into a user-facing message."""


class InvalidInputError(TalkingHeadError, ValueError):
    """An option or an input file is not acceptable."""


class ImageError(InvalidInputError):
    """The source image cannot be read or used."""


class NoFaceError(ImageError):
    """No face was found in the source image."""

    def __init__(self, message: str = "no face found in the image") -> None:
        super().__init__(message)


class AudioError(InvalidInputError):
    """The driving audio cannot be read, is silent, or is too long."""


class CheckpointError(TalkingHeadError):
    """A weight file is missing or does not match the expected layout."""


class FFmpegError(TalkingHeadError, RuntimeError):
    """ffmpeg failed; carries the tail of its stderr (a decoding failure of an upload is re-raised as an input
    error by the readers in `sadtalker.io`)."""


class ServiceError(TalkingHeadError, RuntimeError):
    """The service could not do the work (resources, an internal fault): not the user's input. The front may retry
    the same request elsewhere or later."""


class OutOfMemoryError(ServiceError):
    """The device ran out of memory for this request; the message names a smaller setting that fits."""


class CancelledError(TalkingHeadError):
    """The caller abandoned the request (a cancelled Gradio job): the generation stopped at its next progress
    report. Nobody is waiting for the answer."""
