"""LMDM: Ditto's latent motion diffusion transformer (the original's `MotionDecoder` inside `LMDM`).

It predicts the clean 80-frame motion x0 from a noisy one, the previous frame's motion and per-frame conditions
(HuBERT audio, emotion, eye state, source keypoints). Attribute names follow the official state dict
(`lmdm_v0.4_hubert.pth` -> `model_state_dict`), so the file loads strictly without renaming.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class LMDMConfig:
    """Sizes of the released `lmdm_v0.4_hubert.pth` (LMDM wrapper defaults with the cfg's 1103 condition dims)."""

    motion_dim: int = 265  # scale 1 | pitch 66 | yaw 66 | roll 66 | t 3 | exp 63
    cond_dim: int = 1103  # HuBERT 1024 | emotion 8 | eye open 2 | eye ball 6 | source keypoints 63
    seq_frames: int = 80
    latent_dim: int = 512
    ff_size: int = 1024
    num_layers: int = 8
    num_heads: int = 8
    num_cond_layers: int = 2
    rotary_theta: float = 10000.0


class RotaryEmbedding(nn.Module):
    """Rotary position table over the full width; one instance is shared by every attention layer.

    The original rotates the token vectors that enter attention (before the in-projection), pairing adjacent
    features (2i, 2i+1) at frequency `freqs[i]`.
    """

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)
        self.register_buffer("freqs", freqs)  # (dim/2,), stored in the checkpoint under every layer's name
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (length, dim) of position x frequency, each frequency repeated for its feature pair.

        The angles are float32 and cast to `dtype` before cos/sin, as the original does.
        """
        key = (length, device, dtype)
        if key not in self._tables:
            # plain tensors (not inference tensors), usable whatever grad mode the next call runs under
            with torch.inference_mode(False), torch.no_grad():
                self._tables[key] = self._make_tables(length, device, dtype)
        return self._tables[key]

    def _make_tables(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(length, device=device, dtype=torch.float32)
        angles = positions[:, None] * self.freqs.to(device=device, dtype=torch.float32)[None, :]  # (L, dim/2)
        angles = angles.repeat_interleave(2, dim=-1).to(dtype)  # (L, dim)
        return angles.cos(), angles.sin()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, dim) -> rotated x, positions 0..L-1."""
        cos, sin = self.tables(x.shape[-2], x.device, x.dtype)
        pairs = x.unflatten(-1, (-1, 2))  # (B, L, dim/2, 2)
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (-x_odd, x_even)
        return x * cos + rotated * sin


class SinusoidalEmbedding(nn.Module):
    """Diffusion step t -> [sin(t f) | cos(t f)], f = 10000^(-i/(half-1))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, times: torch.Tensor) -> torch.Tensor:
        """times (B,) integer steps -> (B, dim) float32."""
        half = self.dim // 2
        scale = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=times.device) * -scale)  # (half,)
        args = times[:, None] * freqs[None, :]  # (B, half)
        return torch.cat((args.sin(), args.cos()), dim=-1)


class FiLM(nn.Module):
    """Time embedding -> per-channel (scale, shift); applied as (1 + scale) * x + shift."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Mish(), nn.Linear(dim, dim * 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, L, dim), t (B, dim)."""
        scale, shift = self.block(t)[:, None, :].chunk(2, dim=-1)  # (B, 1, dim) each
        return (scale + 1) * x + shift


class CondEncoderLayer(nn.Module):
    """Pre-norm self-attention + GELU feed-forward over the condition tokens (rotary on queries/keys)."""

    def __init__(self, c: LMDMConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        d = c.latent_dim
        self.self_attn = nn.MultiheadAttention(d, c.num_heads, batch_first=True)
        self.linear1 = nn.Linear(d, c.ff_size)
        self.linear2 = nn.Linear(c.ff_size, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.rotary = rotary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, dim) -> (B, L, dim)."""
        h = self.norm1(x)
        qk = self.rotary(h)
        x = x + self.self_attn(qk, qk, h, need_weights=False)[0]
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class FiLMDecoderLayer(nn.Module):
    """Pre-norm self-attention, cross-attention to the condition memory, feed-forward; each branch FiLM-modulated
    by the time embedding before its residual add."""

    def __init__(self, c: LMDMConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        d = c.latent_dim
        self.self_attn = nn.MultiheadAttention(d, c.num_heads, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d, c.num_heads, batch_first=True)
        self.linear1 = nn.Linear(d, c.ff_size)
        self.linear2 = nn.Linear(c.ff_size, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)
        self.film1 = FiLM(d)
        self.film2 = FiLM(d)
        self.film3 = FiLM(d)
        self.rotary = rotary

    def forward(self, x: torch.Tensor, memory: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, L, dim), memory (B, M, dim), t (B, dim) -> (B, L, dim)."""
        h = self.norm1(x)
        qk = self.rotary(h)
        x = x + self.film1(self.self_attn(qk, qk, h, need_weights=False)[0], t)
        h = self.norm2(x)
        x = x + self.film2(self.multihead_attn(self.rotary(h), self.rotary(memory), memory, need_weights=False)[0], t)
        return x + self.film3(self.linear2(F.gelu(self.linear1(self.norm3(x)))), t)


class DecoderStack(nn.Module):
    """The decoder layers (a container only, so the keys read `seqTransDecoder.stack.N`)."""

    def __init__(self, c: LMDMConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.stack = nn.ModuleList(FiLMDecoderLayer(c, rotary) for _ in range(c.num_layers))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        for layer in self.stack:
            x = layer(x, memory, t)
        return x


class LMDM(nn.Module):
    """x0 prediction of the motion diffusion model.

    The condition path (`encode_condition`) does not depend on the noisy motion or the step, so a sampler runs it
    once per clip; `forward` is one denoiser pass given condition tokens and a pooled condition vector, either
    the encoded ones or the learned null ones (`null_condition`) for classifier-free guidance.
    """

    def __init__(self, config: LMDMConfig = LMDMConfig()) -> None:
        super().__init__()
        self.config = c = config
        d = c.latent_dim
        self.rotary = RotaryEmbedding(d, c.rotary_theta)
        self.time_mlp = nn.Sequential(SinusoidalEmbedding(d), nn.Linear(d, d * 4), nn.Mish())
        self.to_time_cond = nn.Sequential(nn.Linear(d * 4, d))
        self.to_time_tokens = nn.Sequential(nn.Linear(d * 4, d * 2), nn.Unflatten(1, (2, d)))  # 2 time tokens
        self.null_cond_embed = nn.Parameter(torch.zeros(1, c.seq_frames, d))
        self.null_cond_hidden = nn.Parameter(torch.zeros(1, d))
        self.norm_cond = nn.LayerNorm(d)
        self.input_projection = nn.Linear(c.motion_dim * 2, d)
        self.cond_encoder = nn.Sequential(*(CondEncoderLayer(c, self.rotary) for _ in range(c.num_cond_layers)))
        self.cond_projection = nn.Linear(c.cond_dim, d)
        self.non_attn_cond_projection = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d)
        )
        self.seqTransDecoder = DecoderStack(c, self.rotary)
        self.final_layer = nn.Linear(d, c.motion_dim)

    def cast_weights(self, dtype: torch.dtype) -> LMDM:
        """Parameters to `dtype` (fp16/bf16 on CUDA); the rotary frequencies stay float32."""
        for p in self.parameters():
            p.data = p.data.to(dtype)
        return self

    def encode_condition(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cond (B, L, cond_dim) -> tokens (B, L, dim) for cross-attention, pooled (B, dim) for FiLM."""
        tokens = self.cond_encoder(self.cond_projection(cond))  # (B, L, dim)
        return tokens, self.non_attn_cond_projection(tokens.mean(dim=-2))

    def null_condition(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned unconditional tokens (B, seq_frames, dim) and pooled vector (B, dim)."""
        return self.null_cond_embed.expand(batch, -1, -1), self.null_cond_hidden.expand(batch, -1)

    def forward(self, x: torch.Tensor, cond_frame: torch.Tensor, cond_tokens: torch.Tensor,
                cond_hidden: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Predicted clean motion.

        Args:
            x: (B, L, motion_dim) noisy motion.
            cond_frame: (B, motion_dim) motion of the frame before the clip.
            cond_tokens, cond_hidden: from `encode_condition` or `null_condition`.
            times: (B,) integer diffusion steps.
        Returns:
            (B, L, motion_dim).
        """
        dtype = x.dtype
        x = torch.cat([x, cond_frame[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)  # (B, L, 2*motion_dim)
        x = self.input_projection(x)  # (B, L, dim)
        t_hidden = self.time_mlp[1:](self.time_mlp[0](times).to(dtype))  # (B, 4*dim)
        t = self.to_time_cond(t_hidden) + cond_hidden.to(dtype)  # (B, dim)
        t_tokens = self.to_time_tokens(t_hidden)  # (B, 2, dim)
        memory = self.norm_cond(torch.cat((cond_tokens.to(dtype), t_tokens), dim=-2))  # (B, L+2, dim)
        return self.final_layer(self.seqTransDecoder(x, memory, t))  # (B, L, motion_dim)
