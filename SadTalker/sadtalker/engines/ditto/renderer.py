"""The renderer half of Ditto as one object: register a source portrait once, then turn driving motion (from the
motion half) into finished frames: stitching -> warp + decode -> paste-back, as an iterator."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch

from sadtalker.accel import AccelConfig
from sadtalker.engines.ditto.paste import PasteBack
from sadtalker.engines.ditto.render import FrameRenderer, Precision
from sadtalker.engines.ditto.source import CropOptions, Landmarker, SourceEncoder, SourceInfo, fit_source_image
from sadtalker.engines.ditto.stitch import MotionStitcher, StitchOptions
from sadtalker.engines.ditto.weights import DittoCheckpoints, load_renderer_networks

logger = logging.getLogger(__name__)


class DittoRenderer:
    def __init__(self, networks: Mapping[str, torch.nn.Module], precision: Precision = "fp32", batch_size: int = 1,
                 landmarker: Landmarker | None = None, crop_options: CropOptions | None = None,
                 stitch_options: StitchOptions | None = None, accel: AccelConfig | None = AccelConfig()) -> None:
        """`accel`: the warp and decoder's CPU speed paths (see FrameRenderer)."""
        self.encoder = SourceEncoder(networks["motion_extractor"], networks["appearance_extractor"], landmarker,
                                     crop_options or CropOptions())
        self.stitcher = MotionStitcher(networks["stitch_network"], stitch_options or StitchOptions())
        self.renderer = FrameRenderer(networks["warp_network"], networks["decoder"], precision, batch_size, accel)

    @classmethod
    def from_checkpoint(cls, checkpoints: DittoCheckpoints | None = None, device: str | torch.device = "cpu",
                        **kwargs) -> DittoRenderer:
        """Load the five networks once (strictly, from the official files) onto `device`."""
        networks = load_renderer_networks(checkpoints or DittoCheckpoints())
        return cls({k: v.to(device) for k, v in networks.items()}, **kwargs)

    def register(self, image: np.ndarray, max_dim: int = 1920) -> SourceInfo:
        """RGB uint8 portrait -> everything the frames reuse (crop, features, eye conditions)."""
        return self.encoder(fit_source_image(image, max_dim))

    def frames(self, source: SourceInfo, driving: Mapping[str, object],
               progress: Callable[[float, str], None] | None = None, paste_back: bool = True,
               batch_size: int | None = None, stitch_options: StitchOptions | None = None) -> Iterator[np.ndarray]:
        """Per-frame driving motion (N, ...) -> N frames, made one batch at a time: (H, W, 3) uint8 RGB of the
        source's size pasted back, or with `paste_back=False` the (512, 512, 3) uint8 crop renders themselves
        (clipped and truncated as the paste-back does). `stitch_options` replace the defaults for this call."""
        stitcher = self.stitcher if stitch_options is None else MotionStitcher(self.stitcher.stitch_net,
                                                                                stitch_options)
        x_s, x_d = stitcher(source.motion, driving)
        paste = PasteBack(source.frame, source.crop.M_c2o) if paste_back else None
        n = x_d.shape[0]
        for i, render in enumerate(self.renderer.frames(source.f_s, x_s, x_d, batch_size)):
            yield paste(render) if paste is not None else np.clip(render, 0, 255).astype(np.uint8)
            if progress is not None:
                progress((i + 1) / n, "render")
