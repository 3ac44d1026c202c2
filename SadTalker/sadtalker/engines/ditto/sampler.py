"""DDIM sampling of the LMDM with classifier-free guidance (the original's `LMDM.setup` / `ddim_sample`).

The schedule is computed with the original's float32 tensor operations in the same order: its first-step
coefficient c = sqrt(1 - a_next - sigma^2) is float32 cancellation noise (0.00158 at 50 steps) and comes out
NaN for a few step counts (3 on one x86 CPU here, 5 on another: the math library's cos rounding decides), which
the original silently turns into a NaN motion; we refuse those.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import torch

from sadtalker.errors import InvalidInputError
from sadtalker.nets.ditto.lmdm import LMDM

logger = logging.getLogger(__name__)

TRAIN_STEPS = 1000
GUIDANCE_WEIGHT = 2.0
COSINE_S = 8e-3
MAX_BETA = 0.999


def cosine_alphas_cumprod(n_timestep: int = TRAIN_STEPS, s: float = COSINE_S) -> torch.Tensor:
    """(n_timestep,) float32 cumulative alphas: cosine betas in float64, clipped to 0.999, cast to float32
    before the cumulative product (as the original)."""
    steps = torch.arange(n_timestep + 1, dtype=torch.float64) / n_timestep + s
    f = torch.cos(steps / (1 + s) * math.pi / 2).pow(2)
    f = f / f[0]
    betas = (1 - f[1:] / f[:-1]).clamp(0, MAX_BETA).float()
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True)
class DDIMSchedule:
    """Per-step values for `steps` DDIM steps (eta = 1).

    times: (steps,) integer t fed to the network; the last step (t_next = -1) returns x0 and uses no noise.
    alpha_next_sqrt, c, sigma: (steps-1,) float32 update coefficients.
    sqrt_recip_one_minus, sqrt_recip_minus_one: (steps,) sqrt(1/(1-a_t)), sqrt(1/a_t - 1) for pred_noise.
    """

    steps: int
    times: torch.Tensor
    alpha_next_sqrt: torch.Tensor
    c: torch.Tensor
    sigma: torch.Tensor
    sqrt_recip_one_minus: torch.Tensor
    sqrt_recip_minus_one: torch.Tensor

    @classmethod
    def create(cls, steps: int) -> DDIMSchedule:
        """Raises InvalidInputError for step counts outside 1..1000 or whose float32 schedule is not finite."""
        schedule = cls.unchecked(steps)
        times = schedule.times
        bad = [int(times[i]) for i in range(steps - 1)
               if not (math.isfinite(float(schedule.c[i])) and math.isfinite(float(schedule.sigma[i])))]
        if bad:
            raise InvalidInputError(
                f"{steps} sampling steps give a NaN DDIM coefficient at t={bad[0]} in float32 (the original Ditto "
                f"would return a NaN motion); choose another step count, e.g. {steps + 1} or the default 50"
            )
        return schedule

    @classmethod
    def unchecked(cls, steps: int) -> DDIMSchedule:
        """The schedule as the original computes it, NaN coefficients included (tests compare with those)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= TRAIN_STEPS:
            raise InvalidInputError(f"sampling steps must be an integer from 1 to {TRAIN_STEPS}, got {steps!r}")
        ac = cosine_alphas_cumprod()
        # float32 linspace truncated toward zero (-1 stays -1), reversed into (t, t_next) pairs
        grid = list(reversed(torch.linspace(-1, TRAIN_STEPS - 1, steps=steps + 1).int().tolist()))
        pairs = list(itertools.pairwise(grid))
        a_next_sqrt, cs, sigmas = [], [], []
        for t, t_next in pairs[:-1]:
            a, a_next = ac[t], ac[t_next]
            sigma = ((1 - a / a_next) * (1 - a_next) / (1 - a)).sqrt()
            a_next_sqrt.append(a_next.sqrt())
            cs.append((1 - a_next - sigma**2).sqrt())
            sigmas.append(sigma)
        times = torch.tensor([t for t, _ in pairs], dtype=torch.long)
        return cls(
            steps=steps, times=times,
            alpha_next_sqrt=torch.stack(a_next_sqrt) if a_next_sqrt else torch.zeros(0),
            c=torch.stack(cs) if cs else torch.zeros(0),
            sigma=torch.stack(sigmas) if sigmas else torch.zeros(0),
            sqrt_recip_one_minus=torch.sqrt(1.0 / (1.0 - ac))[times],
            sqrt_recip_minus_one=torch.sqrt(1.0 / ac - 1)[times],
        )


def draw_step_noise(steps: int, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """(steps-1, *shape) per-step noise, drawn ONCE per video and reused by every clip (as the original's setup).

    One float32 draw per step on the CPU generator, in order, so a seed gives the original's draws.
    """
    noise = [torch.randn(shape, generator=generator) for _ in range(steps - 1)]
    return torch.stack(noise) if noise else torch.zeros((0, *shape))


def draw_initial_noise(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """x_T for one clip (drawn after the step noise, one per clip)."""
    return torch.randn(shape, generator=generator)


class DDIMSampler:
    """Runs the guided DDIM loop of one 80-frame clip.

    `batch_guidance` runs the unconditional and conditional passes as one batch of 2 (fewer kernel launches;
    float32 reassociation differences of ~1e-7 in the motion); False runs them one after the other, the
    original's operations in its order. None: batched on CUDA, sequential on the CPU (no faster there).
    """

    def __init__(self, model: LMDM, steps: int | DDIMSchedule = 50, guidance_weight: float = GUIDANCE_WEIGHT,
                 batch_guidance: bool | None = None) -> None:
        self.model = model
        self.schedule = steps if isinstance(steps, DDIMSchedule) else DDIMSchedule.create(steps)
        self.guidance_weight = guidance_weight
        if batch_guidance is None:
            batch_guidance = model.final_layer.weight.device.type == "cuda"
        self.batch_guidance = batch_guidance

    @property
    def steps(self) -> int:
        return self.schedule.steps

    def _guided_x0(self, x: torch.Tensor, cond_frame: torch.Tensor, cond: tuple[torch.Tensor, torch.Tensor],
                   null: tuple[torch.Tensor, torch.Tensor], t: torch.Tensor) -> torch.Tensor:
        """x (1, L, D) -> guided x0 = unc + (cond - unc) * w, float32."""
        model, dtype = self.model, self.model.final_layer.weight.dtype
        x_in, frame = x.to(dtype), cond_frame.to(dtype)
        if self.batch_guidance:
            both = model(x_in.expand(2, -1, -1), frame.expand(2, -1), torch.cat([null[0], cond[0]]),
                         torch.cat([null[1], cond[1]]), t.expand(2)).float()  # (2, L, D)
            unc, con = both[:1], both[1:]
        else:
            unc = model(x_in, frame, null[0], null[1], t).float()
            con = model(x_in, frame, cond[0], cond[1], t).float()
        return unc + (con - unc) * self.guidance_weight

    def sample(self, cond_frame: torch.Tensor, aud_cond: torch.Tensor, x_T: torch.Tensor,
               step_noise: torch.Tensor, record: list | None = None) -> torch.Tensor:
        """One clip's motion.

        Args:
            cond_frame: (1, motion_dim) motion of the frame before the clip (the source motion for the first).
            aud_cond: (1, L, cond_dim) per-frame conditions.
            x_T: (1, L, motion_dim) initial noise; step_noise: (steps-1, 1, L, motion_dim) from draw_step_noise.
            record: if a list, gets (x_t, t, pred_noise, x_start) per step (tests).
        Returns:
            (1, L, motion_dim) float32 on the model's device.
        """
        s = self.schedule
        if step_noise.shape[0] != s.steps - 1:
            raise InvalidInputError(f"step noise has {step_noise.shape[0]} steps, the schedule needs {s.steps - 1}")
        device = self.model.final_layer.weight.device
        dtype = self.model.final_layer.weight.dtype
        x = x_T.to(device=device, dtype=torch.float32)
        cond_frame = cond_frame.to(device=device, dtype=torch.float32)
        cond = self.model.encode_condition(aud_cond.to(device=device, dtype=dtype))
        null = self.model.null_condition(1)
        x0 = x
        for i in range(s.steps):
            t = s.times[i : i + 1].to(device)
            x0 = self._guided_x0(x, cond_frame, cond, null, t)
            pred_noise = s.sqrt_recip_one_minus[i] * x - x0 / s.sqrt_recip_minus_one[i]
            if record is not None:
                record.append((x, t, pred_noise, x0))
            if i + 1 < s.steps:  # the last step (t_next = -1) returns x0 itself
                noise = step_noise[i].to(device=device, dtype=torch.float32)
                x = x0 * s.alpha_next_sqrt[i] + s.c[i] * pred_noise + s.sigma[i] * noise
        return x0
