"""`predict_stream` over real HTTP with the landmark engine: the video's bytes arrive while it renders (the first
fragment long before the end), appended in order they make a valid H.264/AAC MP4, input errors come out as with
`predict`, and `predict` itself is unchanged beside it."""
from __future__ import annotations

import time

import pytest
from live_services import free_port, serve_in_thread

from sadtalker.io.limits import InputLimits
from sadtalker.io.video import probe
from sadtalker.service.model_service import ModelService
from sadtalker.service.settings import ServiceSettings
from sadtalker.service.streaming import StreamChunk
from sadtalker.weights import CheckpointLocations


@pytest.fixture(scope="module")
def service_url(tmp_path_factory):
    from app import create_app

    tmp = tmp_path_factory.mktemp("stream")
    settings = ServiceSettings(port=free_port(), results_dir=tmp / "results", concurrency=1,
                               locations=CheckpointLocations(checkpoint_dir=tmp / "none"),
                               limits=InputLimits(max_audio_seconds=30))
    service = ModelService(settings)
    service.warm_up()
    with serve_in_thread(create_app(service), settings.port) as url:
        yield url, settings


def stream(url, image, audio, options='{"engine": "landmark"}'):
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    job = client.submit(handle_file(str(image)), handle_file(str(audio)), "crop", False, False, 2, 512, 0, options,
                        None, api_name="/predict_stream")
    for message in job:
        yield time.perf_counter(), StreamChunk.from_message(message)
    job.result()  # the iterator ends quietly on an error; the result raises it


def test_stream_is_a_growing_fragmented_mp4(service_url, portrait_path, long_speech_path, tmp_path):
    url, settings = service_url
    started = time.perf_counter()
    chunks, seen, body = [], set(), bytearray()
    for at, chunk in stream(url, portrait_path, long_speech_path):
        if chunk.seq in seen:  # the client may hand the last message twice
            continue
        seen.add(chunk.seq)
        assert chunk.offset == len(body), "chunks arrive in order, without gaps"
        body += chunk.data
        chunks.append((at - started, chunk, bytes(body)))
    last = chunks[-1][1]
    assert last.done and last.info["engine"] == "landmark" and last.info["frames"] > 200
    arrived, first, _ = next(c for c in chunks if b"moof" in c[2] and b"mdat" in c[2])
    assert first.elapsed < 0.5 * last.elapsed, "the service sent the first fragment long before the end"
    assert arrived < chunks[-1][0] and not first.done
    assert [c.progress for _, c, _ in chunks] == sorted(c.progress for _, c, _ in chunks)
    out = tmp_path / "streamed.mp4"
    out.write_bytes(body)
    info = probe(out)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.num_frames == last.info["frames"]
    assert not list(settings.results_dir.glob("*.fmp4")), "the service's copy is removed"


def test_stream_refuses_bad_input_like_predict(service_url, no_face_path, speech_path):
    from gradio_client.exceptions import AppError

    url, _ = service_url
    with pytest.raises(AppError, match="Input error"):
        list(stream(url, no_face_path, speech_path))
    with pytest.raises(AppError, match="Input error: options"):
        list(stream(url, no_face_path, speech_path, options="[1]"))


def test_predict_still_returns_a_file(service_url, portrait_path, speech_path):
    from gradio_client import Client, handle_file

    url, _ = service_url
    video, info = Client(url, verbose=False).predict(
        handle_file(str(portrait_path)), handle_file(str(speech_path)), "crop", False, False, 2, 256, 0,
        '{"engine": "landmark"}', None, api_name="/predict")
    assert info["engine"] == "landmark" and probe(video).video_codec == "h264"


def test_preview_finds_the_face_and_the_crop(service_url, portrait_path, no_face_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, _ = service_url
    client = Client(url, verbose=False)
    crop = client.predict(handle_file(str(portrait_path)), "crop", 256, api_name="/preview")
    assert (crop["width"], crop["height"], crop["output"]) == (512, 512, [256, 256])
    x0, y0, x1, y1 = crop["face_box"]
    c0, d0, c1, d1 = crop["crop_box"]
    assert 150 < x0 < x1 < 330 and 50 < y0 < y1 < 280, crop  # the astronaut's face
    assert c0 <= x0 and d0 <= y0 and c1 >= x1 and d1 >= y1 and abs((c1 - c0) - (d1 - d0)) < 1
    full = client.predict(handle_file(str(portrait_path)), "full", 512, api_name="/preview")
    assert full["crop_box"] == [0, 0, 512, 512] and full["output"] == [512, 512]
    with pytest.raises(AppError, match="Input error: no face"):
        client.predict(handle_file(str(no_face_path)), "crop", 256, api_name="/preview")
