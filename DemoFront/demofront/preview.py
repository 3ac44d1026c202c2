"""`POST /api/preview`: before a job is made, the face the model service finds in a portrait and the crop that the
chosen preprocess mode and size will use, so the form can show them (and refuse a portrait without a face)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .errors import ApiError
from .model_client import ModelRejectedError, ModelUnavailableError
from .validation import check_image, parse_options

bp = Blueprint("preview", __name__, url_prefix="/api")


@bp.post("/preview")
def preview() -> Response:
    front: Any = current_app.extensions["demofront"]
    upload = request.files.get("image")
    if upload is None or not upload.filename:
        raise ApiError(400, "image: no image was sent (multipart field 'image')", field="image")
    options = parse_options({k: v for k, v in request.form.items() if k in ("preprocess", "size")})
    client = front.client
    if not hasattr(client, "preview"):
        raise ApiError(501, "this front's model client has no preview")
    folder = Path(tempfile.mkdtemp(prefix="preview-", dir=front.storage.root / "incoming"))
    try:
        stored = front.storage.save_stream(upload.stream, folder / "image.upload")
        info = check_image(stored.path)
        path = stored.path.rename(folder / f"image.{info.extension}")
        try:
            return jsonify(client.preview(path, options))
        except ModelRejectedError as exc:
            raise ApiError(422, str(exc).removeprefix("Input error: "), field="image") from exc
        except ModelUnavailableError as exc:
            raise ApiError(502, str(exc)) from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)
