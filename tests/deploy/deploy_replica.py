"""A model service replica for the scale-out tests: the real Gradio app and /health route (SadTalker/app.py's
`create_app`) with a stand-in engine that writes a real H.264/AAC clip at a set pace, so a replica is busy long
enough to be killed mid-job. Run as `python tests/deploy/deploy_replica.py PORT SECONDS_PER_FRAME`."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "SadTalker"))

import numpy as np  # noqa: E402

from sadtalker.engines.base import GenerationResult  # noqa: E402
from sadtalker.errors import NoFaceError  # noqa: E402
from sadtalker.io.video import VideoWriter  # noqa: E402
from sadtalker.service.model_service import ModelService  # noqa: E402
from sadtalker.service.settings import ServiceSettings  # noqa: E402
from sadtalker.weights import CheckpointLocations  # noqa: E402

logger = logging.getLogger("deploy_replica")


class PacedEngine:
    """Frames of the portrait's mean colour, `seconds_per_frame` apart; a flat image has no face."""

    name = "landmark"

    def __init__(self, seconds_per_frame: float) -> None:
        self.seconds_per_frame = seconds_per_frame

    def generate(self, inputs, options, output_path, progress=None):
        image, wav = inputs.image, inputs.audio
        if image.std(axis=(0, 1)).max() < 1:
            raise NoFaceError()
        frames = round(len(wav) / 16000 * 25)
        colour = image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
        with VideoWriter(output_path, 32, 32, audio=wav) as writer:
            for i in range(frames):
                writer.write(np.broadcast_to(colour, (32, 32, 3)).copy())
                time.sleep(self.seconds_per_frame)
                if progress and i % 10 == 0:
                    progress((i + 1) / frames, "rendering")
        return GenerationResult(Path(output_path), self.name, frames, len(wav) / 16000, 32, 32)


def main() -> None:
    import uvicorn
    from app import create_app

    logging.basicConfig(level=logging.WARNING)
    port, pace = int(sys.argv[1]), float(sys.argv[2])
    results = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(f"/tmp/deploy-replica-{port}")
    settings = ServiceSettings(port=port, results_dir=results, device="cpu",
                               locations=CheckpointLocations(checkpoint_dir=results / "no-checkpoints"))
    service = ModelService(settings)
    service.install_engine("landmark", PacedEngine(pace), default=True)
    uvicorn.run(create_app(service), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
