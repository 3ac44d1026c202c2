"""Unit tests for the front's checks: uploads decoded (not trusted by name), options, text to speech, settings."""
from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import soundfile

from demofront.config import Config, parse_rate_limit
from demofront.errors import ApiError
from demofront.storage import Storage
from demofront.tts import check_text, synthesize
from demofront.validation import check_audio_file, check_image, parse_options, sniff_audio_extension


def test_image_format_comes_from_the_content_not_the_name(portrait_path, tmp_path):
    from PIL import Image

    disguised = tmp_path / "photo.wav"  # a JPEG under a misleading name
    Image.open(portrait_path).convert("RGB").save(disguised, format="JPEG")
    info = check_image(disguised)
    assert (info.format, info.extension, info.width, info.height) == ("JPEG", "jpg", 512, 512)


@pytest.mark.parametrize("content", [b"", b"hello, not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_not_an_image_names_the_field(tmp_path, content):
    path = tmp_path / "face.png"
    path.write_bytes(content)
    with pytest.raises(ApiError) as info:
        check_image(path)
    assert info.value.status == 400 and info.value.field == "image"
    assert "image" in info.value.message


def test_too_small_image_is_refused(tmp_path):
    from PIL import Image

    path = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(ApiError, match="too small"):
        check_image(path)


def test_audio_checks(speech_path, silent_path, tmp_path):
    info = check_audio_file(speech_path, max_seconds=300)
    assert info.extension == "wav" and 1.5 < info.seconds < 6
    with pytest.raises(ApiError, match=r"audio: the audio is too long .* the limit is 1 s"):
        check_audio_file(speech_path, max_seconds=1)
    with pytest.raises(ApiError, match="silent"):
        check_audio_file(silent_path, max_seconds=300)
    junk = tmp_path / "speech.wav"
    junk.write_bytes(b"RIFF....WAVEjunk" * 10)
    with pytest.raises(ApiError) as info:
        check_audio_file(junk, max_seconds=300)
    assert info.value.field == "audio" and "not a supported audio format" in info.value.message
    assert "speech.wav" not in info.value.message  # the stored name is not leaked; the field is named


def test_audio_container_is_sniffed(tmp_path):
    flac = tmp_path / "x.bin"
    soundfile.write(str(flac), np.sin(np.linspace(0, 300, 16000)).astype(np.float32), 16000, format="FLAC")
    assert sniff_audio_extension(flac) == "flac"


def test_options_are_checked_by_the_shared_dataclass():
    options = parse_options({"preprocess": "full", "still_mode": "true", "size": "512", "pose_style": "45",
                             "csrf_token": "ignored"})
    assert (options.preprocess, options.still_mode, options.size, options.pose_style) == ("full", True, 512, 45)
    with pytest.raises(ApiError) as info:
        parse_options({"pose_style": "46"})
    assert info.value.field == "pose_style" and "between 0 and 45" in info.value.message
    with pytest.raises(ApiError) as info:
        parse_options({"preprocess": "../../etc"})
    assert info.value.field == "preprocess"


def test_text_checks():
    assert check_text("  hello  ", None, None, 100) == ("hello", "en", None)
    with pytest.raises(ApiError, match="text is empty"):
        check_text("   ", "en", None, 100)
    with pytest.raises(ApiError, match=r"too long \(11 characters; the limit is 10\)"):
        check_text("hello world", "en", None, 10)
    with pytest.raises(ApiError) as info:
        check_text("hi", "klingon", None, 100)
    assert info.value.field == "language"
    with pytest.raises(ApiError) as info:
        check_text("hi", "en", "../x", 100)
    assert info.value.field == "voice"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_synthesize_speaks_text_passed_on_stdin(tmp_path):
    out = synthesize("--help me, this is not an option", "en", "f3", tmp_path / "tts.wav")
    info = check_audio_file(out, max_seconds=60)
    assert info.extension == "wav" and info.seconds > 1.0


def test_storage_keeps_paths_inside_the_data_folder(tmp_path):
    storage = Storage(tmp_path / "data")
    stored = storage.save_stream(io.BytesIO(b"abc"), storage.job_dir("a" * 32) / "image.png")
    assert stored.size == 3 and stored.sha256.startswith("ba7816bf")
    assert storage.absolute(storage.relative(stored.path)) == stored.path.resolve()
    for bad in ("../x", "a" * 31, "A" * 32, "../../" + "a" * 26):
        with pytest.raises(ValueError):
            storage.job_dir(bad)
    with pytest.raises(ValueError):
        storage.absolute("../../etc/passwd")


def test_config_from_environment(tmp_path):
    config = Config.from_env({"DATABASE_URL": "postgresql://u@h/db", "MAX_UPLOAD_MB": "2", "RATE_LIMIT": "5/hour",
                              "ALLOW_ANONYMOUS": "false", "WORKERS": "3", "DATA_DIR": str(tmp_path),
                              "ADMIN_USERS": "ann, bob"})
    assert config.database_url == "postgresql://u@h/db" and config.max_upload_bytes == 2 * 1024 * 1024
    assert config.rate == (5, 3600.0) and config.allow_anonymous is False and config.workers == 3
    assert config.admin_users == ("ann", "bob") and config.data_dir == tmp_path
    default = Config.from_env({})
    assert default.database_url.startswith("sqlite:///") and default.max_audio_seconds == 300
    assert (default.host, default.port) == ("127.0.0.1", 5000)
    assert parse_rate_limit("off") is None and parse_rate_limit("10/30s") == (10, 30.0)
    with pytest.raises(ValueError):
        Config.from_env({"RATE_LIMIT": "lots"})


def test_hardening_settings_from_environment():
    config = Config.from_env({"TRUSTED_PROXIES": "1", "SESSION_COOKIE_SECURE": "yes", "JOB_RETENTION_DAYS": "0",
                              "LOGIN_LIMIT_PER_ACCOUNT": "5/minute", "LOGIN_LIMIT_PER_ADDRESS": "off",
                              "SIGNUP_LIMIT_PER_ADDRESS": "3/hour", "MAX_QUEUED_PER_ACCOUNT": "4",
                              "MAX_QUEUED_JOBS": "50", "RETENTION_SWEEP_MINUTES": "5", "SERVER_THREADS": "8",
                              "READ_TIMEOUT_SECONDS": "10", "RATELIMIT_STORAGE_URI": "memory://"})
    assert (config.trusted_proxies, config.session_cookie_secure, config.job_retention_days) == (1, "true", 0)
    assert (config.max_queued_per_account, config.max_queued_jobs, config.server_threads) == (4, 50, 8)
    default = Config.from_env({})
    assert default.session_cookie_secure == "auto" and default.trusted_proxies == 0
    assert default.job_retention_days == 30 and default.login_limit_per_account == "10/15min"
    for bad in ({"LOGIN_LIMIT_PER_ACCOUNT": "often"}, {"SESSION_COOKIE_SECURE": "maybe"}, {"TRUSTED_PROXIES": "-1"},
                {"SERVER_THREADS": "0"}, {"JOB_RETENTION_DAYS": "-2"}):
        with pytest.raises(ValueError):
            Config.from_env(bad)
