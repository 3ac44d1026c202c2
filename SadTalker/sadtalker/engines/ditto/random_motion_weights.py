"""Random-weight LMDM files in the official container, for tests and smoke runs without the real download."""
from __future__ import annotations

from pathlib import Path

import torch

from sadtalker.nets.ditto.lmdm import LMDM, LMDMConfig


def random_lmdm(config: LMDMConfig = LMDMConfig(), seed: int = 0, output_scale: float = 0.005) -> LMDM:
    """An LMDM with seeded weights: matrices N(0, 1/fan_in), 1-D weights 1 + N(0, 0.01), biases N(0, 0.01), null
    embeddings N(0, 1); the final layer scaled by `output_scale` so motion values stay small (~0.05)."""
    model = LMDM(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("null_cond"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
            else:
                p.copy_(1 + torch.randn(p.shape, generator=g) * 0.01)
        model.final_layer.weight.mul_(output_scale)
        model.final_layer.bias.mul_(output_scale)
    return model


def write_random_lmdm(path: Path, config: LMDMConfig = LMDMConfig(), seed: int = 0) -> Path:
    """Save `random_lmdm` as {'model_state_dict': state_dict}, the layout of lmdm_v0.4_hubert.pth."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": random_lmdm(config, seed).state_dict()}, path)
    return path
