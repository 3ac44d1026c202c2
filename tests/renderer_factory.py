"""Tiny random-weight face renderers for fast tests (diffusers-style dummy components)."""
from __future__ import annotations

import torch

NUM_KP = 5


def tiny_renderer(size: int = 64, seed: int = 0):
    from sadtalker.engines.sadtalker.render import FaceRenderer
    from sadtalker.nets.dense_motion import DenseMotionConfig
    from sadtalker.nets.generator import GeneratorConfig, OcclusionAwareSPADEGenerator
    from sadtalker.nets.keypoint_detector import KPDetector, KPDetectorConfig
    from sadtalker.nets.mapping import MappingConfig, MappingNet

    torch.manual_seed(seed)
    kp = KPDetector(KPDetectorConfig(num_kp=NUM_KP, block_expansion=4, max_features=16, num_blocks=2,
                                     reshape_channel=64, reshape_depth=4))
    gen = OcclusionAwareSPADEGenerator(GeneratorConfig(
        block_expansion=8, max_features=16, num_down_blocks=2, reshape_channel=4, reshape_depth=4, num_resblocks=1,
        decoder_channels=8, spade_hidden=8,
        dense_motion=DenseMotionConfig(num_kp=NUM_KP, feature_channel=4, block_expansion=4, max_features=16,
                                       num_blocks=2, reshape_depth=4, compress=2)))
    mappings = {"crop": MappingNet(MappingConfig(coeff_nc=70, descriptor_nc=32, num_kp=NUM_KP)),
                "full": MappingNet(MappingConfig(coeff_nc=73, descriptor_nc=32, num_kp=NUM_KP))}
    with torch.no_grad():
        for m in mappings.values():  # keep keypoints in a sensible range, as trained weights do
            m.fc_t.weight.mul_(0.05)
            m.fc_exp.weight.mul_(0.05)
        for module in list(kp.modules()) + list(gen.modules()):
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        for module in gen.modules():  # spectral-norm vectors as a trained file would hold them
            if hasattr(module, "weight_u"):
                module.weight_u.normal_()
                module.weight_v.normal_()
    return FaceRenderer(kp, gen, size, torch.device("cpu"), mappings=mappings)
