"""Text to speech with Debian's espeak-ng, offline: the text goes in on stdin, a WAV comes out."""
from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
from pathlib import Path

from .errors import ApiError

logger = logging.getLogger(__name__)

DEFAULT_LANGUAGE = "en"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def espeak_exe() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ApiError(503, "text to speech is not available: espeak-ng is not installed "
                            "(apt-get install espeak-ng)", field="text")
    return exe


@functools.lru_cache(maxsize=1)
def languages() -> frozenset[str]:
    """Language codes and voice file names espeak-ng knows (e.g. 'en', 'en-us', 'de', 'gmw/en-US')."""
    out = subprocess.run([espeak_exe(), "--voices"], capture_output=True, check=True, text=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5:
            names.add(parts[1].lower())
            names.add(parts[4].lower().split("/")[-1])
    return frozenset(names)


@functools.lru_cache(maxsize=1)
def voices() -> dict[str, str]:
    """Voice variants by lower-case name -> espeak-ng's spelling (e.g. 'f3', 'm1', 'klatt', 'Alex')."""
    out = subprocess.run([espeak_exe(), "--voices=variant"], capture_output=True, check=True, text=True).stdout
    names: dict[str, str] = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5:
            name = parts[4].split("/")[-1]
            names[name.lower()] = name
    return names


def check_text(text: str | None, language: str | None, voice: str | None, max_chars: int) -> tuple[str, str, str | None]:
    """Return (text, language, voice) or raise ApiError(400) naming the field."""
    text = (text or "").strip()
    if not text:
        raise ApiError(400, "text: the text is empty; type something to say, or upload an audio clip",
                       field="text")
    if len(text) > max_chars:
        raise ApiError(400, f"text: the text is too long ({len(text)} characters; the limit is {max_chars})",
                       field="text")
    language = (language or DEFAULT_LANGUAGE).strip().lower()
    if not _NAME.match(language) or language not in languages():
        raise ApiError(400, f"language: espeak-ng has no language {language!r} (e.g. en, en-us, de, fr, es)",
                       field="language")
    wanted = (voice or "").strip().lower() or None
    if wanted is not None and (not _NAME.match(wanted) or wanted not in voices()):
        raise ApiError(400, f"voice: espeak-ng has no voice variant {wanted!r} (e.g. f3, m1, klatt)", field="voice")
    return text, language, voices()[wanted] if wanted else None


def synthesize(text: str, language: str, voice: str | None, output: Path) -> Path:
    """Speak `text` into a WAV file. The text is passed on stdin, never as an argument."""
    name = f"{language}+{voice}" if voice else language
    proc = subprocess.run([espeak_exe(), "-v", name, "-w", str(output), "--stdin"], input=text.encode("utf-8"),
                          capture_output=True, check=False, timeout=120)
    if proc.returncode != 0 or not output.is_file() or output.stat().st_size <= 44:
        tail = proc.stderr.decode("utf-8", "replace").strip()[-300:]
        raise ApiError(500, f"text to speech failed: {tail or 'espeak-ng produced no audio'}", field="text")
    return output
