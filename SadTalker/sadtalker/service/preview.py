"""What a portrait will look like to the engines, before any generation: the face found and the framing that the
chosen preprocess mode and size give (the landmark engine's `choose_framing`; SadTalker's own crop is close to it
but found by its own detector). The Gradio endpoint `preview` returns it; the front draws it on the upload form."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from sadtalker.engines.landmark.engine import choose_framing
from sadtalker.io.image import load_image
from sadtalker.io.limits import InputLimits
from sadtalker.options import GenerationOptions

logger = logging.getLogger(__name__)


class PortraitPreview:
    """Finds the face (MediaPipe face mesh, loaded on first use) and the framing; one call at a time."""

    def __init__(self, limits: InputLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._mesh: Any = None

    def __call__(self, image_path: Path, options: GenerationOptions) -> dict[str, Any]:
        """{width, height, face_box: [x0, y0, x1, y1], crop_box: [x0, y0, x1, y1], output: [w, h]} in the
        portrait's pixels. Raises NoFaceError / ImageError."""
        from sadtalker.landmarks import facemesh as fm

        image = load_image(Path(image_path), self.limits)
        with self._lock:
            if self._mesh is None:
                self._mesh = fm.shared_face_mesh()
            mesh = self._mesh.landmarks(image)
        lo, hi = mesh[:, :2].min(0), mesh[:, :2].max(0)
        framing = choose_framing(image.shape, mesh, options.preprocess.value, options.size)
        x0, y0, w, h = framing.box
        return {"width": int(image.shape[1]), "height": int(image.shape[0]),
                "face_box": [round(float(v), 1) for v in (*lo, *hi)],
                "crop_box": [round(float(v), 1) for v in (x0, y0, x0 + w, y0 + h)],
                "output": [framing.width, framing.height], "preprocess": options.preprocess.value,
                "size": options.size}
