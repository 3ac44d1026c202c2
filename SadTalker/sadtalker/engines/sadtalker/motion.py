"""Audio to motion coefficients: ExpNet (audio2exp) for expression and PoseVAE (audio2pose) for head pose.

The original's Audio2Coeff + get_data, without .mat files between stages: per 25 fps video frame,
64 expression coefficients + 6 pose coefficients (3 angles, 3 translations).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import numpy as np
import torch

from sadtalker.engines.sadtalker.mel import FPS, MelConfig, audio_windows, samples_per_frame
from sadtalker.errors import AudioError, InvalidInputError
from sadtalker.nets.audio2exp import Audio2Exp
from sadtalker.nets.audio2pose import Audio2Pose
from sadtalker.runtime.device import Precision, autocast
from sadtalker.weights import CheckpointLocations, load

logger = logging.getLogger(__name__)

EXP_DIM = 64
POSE = slice(64, 70)
NUM_POSE_STYLES = 46
CHUNK = 256                      # frames per encoder call (memory bound only; the nets are per frame)
BLINK_SHAPE = (0.5, 0.9, 1.0, 0.9, 0.5)


@dataclass(frozen=True)
class SmoothingConfig:
    """Savitzky-Golay smoothing of the predicted pose along time."""

    window: int = 13
    order: int = 2


def blink_sequence(num_frames: int, rng: random.Random) -> np.ndarray:
    """(T, 1) eye-blink ratio: 5-frame blinks after random gaps of 10..min(T/2, 70)-1 frames (none when T <= 20)."""
    ratio = np.zeros((num_frames, 1), dtype=np.float32)
    if num_frames <= 20:
        return ratio
    gaps = range(min(10, num_frames), min(int(num_frames / 2), 70))
    if len(gaps) == 0:  # T = 21: the original's random.choice would fail on the empty range; no blink instead
        return ratio
    frame = 0
    while frame < num_frames:
        start = frame + rng.choice(gaps)
        if start + len(BLINK_SHAPE) > num_frames - 1:
            break
        ratio[start:start + len(BLINK_SHAPE), 0] = BLINK_SHAPE
        frame = start + len(BLINK_SHAPE)
    return ratio


def tile_frames(reference: np.ndarray, num_frames: int) -> np.ndarray:
    """First `num_frames` rows of the reference repeated end to end (it loops when shorter)."""
    if reference.ndim != 2 or len(reference) == 0:
        raise InvalidInputError(f"reference coefficients must be a non-empty (N, C) array; got {reference.shape}")
    return reference[np.arange(num_frames) % len(reference)]


def pose_windows(num_frames: int, seq_len: int) -> int:
    """Number of 32-frame CVAE windows (= latent draws) for T frames: frame 0 is the source pose."""
    div, rest = divmod(num_frames - 1, seq_len)
    return div + (1 if rest else 0)


def draw_pose_noise(num_frames: int, generator: torch.Generator, seq_len: int = 32, latent: int = 64) -> torch.Tensor:
    """(W, 64) standard-normal latents, one draw of [1, 64] per window in order, as the original does."""
    draws = [torch.randn(1, latent, generator=generator) for _ in range(pose_windows(num_frames, seq_len))]
    return torch.cat(draws) if draws else torch.zeros(0, latent)


def _chunked(fn, *tensors: torch.Tensor) -> torch.Tensor:
    n = len(tensors[0])
    return torch.cat([fn(*(t[i:i + CHUNK] for t in tensors)) for i in range(0, n, CHUNK)])


def predict_expression(net: Audio2Exp, windows: torch.Tensor, ref_exp: torch.Tensor,
                       blink: torch.Tensor) -> torch.Tensor:
    """windows (T, 80, 16), ref_exp (T, 64), blink (T, 1) -> expression (T, 64)."""
    return _chunked(net, windows, ref_exp, blink)


def predict_pose(net: Audio2Pose, windows: torch.Tensor, ref_pose: torch.Tensor, style: int,
                 noise: torch.Tensor) -> torch.Tensor:
    """Raw (unsmoothed) pose (T, 6): source pose + CVAE motion; windows (T, 80, 16), ref_pose (6,), noise (W, 64).

    Frames 1..T-1 are cut into full windows; a remainder is covered by the last `seq_len` frames (left-padded
    with copies of the first embedding when shorter) of which only the last `rest` outputs are kept.
    """
    seq_len = net.config.seq_len
    num_frames = len(windows)
    div, rest = divmod(num_frames - 1, seq_len)
    if len(noise) != div + (1 if rest else 0):
        raise InvalidInputError(f"pose noise has {len(noise)} rows; {num_frames} frames need {div + (rest > 0)}")
    motion = [torch.zeros(1, 6, dtype=windows.dtype, device=windows.device)]
    if num_frames > 1:
        emb = _chunked(net.embed, windows[1:])                                   # (T-1, 512)
        groups = [emb[i * seq_len:(i + 1) * seq_len] for i in range(div)]
        if rest:
            tail = emb[-seq_len:]
            if len(tail) < seq_len:
                tail = torch.cat([tail[:1].expand(seq_len - len(tail), -1), tail])
            groups.append(tail)
        audio = torch.stack(groups)                                              # (W, 32, 512)
        w = len(groups)
        style_ids = torch.full((w,), style, dtype=torch.long, device=windows.device)
        out = net.decode(noise.to(windows.device), style_ids, ref_pose.expand(w, 6), audio)  # (W, 32, 6)
        motion.append(out[:div].reshape(-1, 6))                                  # (div*32, 6)
        if rest:
            motion.append(out[-1, -rest:])
    return ref_pose + torch.cat(motion)                                          # (T, 6)


def smooth_pose(pose: np.ndarray, config: SmoothingConfig = SmoothingConfig()) -> np.ndarray:
    """Savitzky-Golay along time; the window shrinks to the largest odd length <= T for short clips."""
    from scipy.signal import savgol_filter

    n = len(pose)
    window = config.window if n >= config.window else int((n - 1) / 2) * 2 + 1
    if window <= config.order:  # too few frames to fit the polynomial: nothing to smooth
        return pose
    return savgol_filter(pose, window, config.order, axis=0).astype(np.float32)


def apply_reference_pose(pose: np.ndarray, ref_pose: np.ndarray) -> np.ndarray:
    """Add the reference video's head motion relative to its first frame: (T, 6) + ref[t] - ref[0]."""
    ref = tile_frames(np.asarray(ref_pose, dtype=np.float32)[:, POSE], len(pose))
    return pose + (ref - ref[:1])


class AudioToMotion:
    """Loaded ExpNet + PoseVAE; `generate` turns a clip into (T, 70) coefficients."""

    def __init__(self, audio2exp: Audio2Exp, audio2pose: Audio2Pose, device: torch.device,
                 mel_config: MelConfig = MelConfig(), smoothing: SmoothingConfig = SmoothingConfig(),
                 precision: Precision = "fp32") -> None:
        self.precision = precision
        self.audio2exp = audio2exp.to(device).eval()
        self.audio2pose = audio2pose.to(device).eval()
        self.device = device
        self.mel_config = mel_config
        self.smoothing = smoothing

    @classmethod
    def from_checkpoint(cls, locations: CheckpointLocations, device: torch.device | str = "cpu",
                        size: int = 256, precision: Precision = "fp32") -> "AudioToMotion":
        """Both networks from SadTalker_V0.0.2_<size>.safetensors (or the legacy .pth files). Raises CheckpointError."""
        exp = load(Audio2Exp(), "audio2exp", locations, size)
        pose = load(Audio2Pose(), "audio2pose", locations, size)
        motion = cls(exp, pose, torch.device(device), precision=precision)
        motion.warm_up()
        return motion

    def warm_up(self) -> None:
        """Import and JIT the audio libraries now (about 3 s on first use), so a request does not pay for them."""
        audio_windows(np.zeros(2 * int(samples_per_frame(self.mel_config)), np.float32), self.mel_config)
        smooth_pose(np.zeros((8, 6), np.float32), self.smoothing)

    def windows(self, audio: np.ndarray, idle: bool) -> np.ndarray:
        """(T, 80, 16) mel windows; idle mode feeds silence windows of zeros for len(audio) seconds."""
        if idle:
            num_frames = int(len(audio) / self.mel_config.sample_rate * FPS)
            if num_frames == 0:
                raise AudioError("idle mode needs at least one video frame (40 ms) of length")
            return np.zeros((num_frames, 80, 16), dtype=np.float32)
        return audio_windows(audio, self.mel_config)

    @torch.inference_mode()
    def generate(self, audio: np.ndarray, source_coeffs: np.ndarray, *, pose_style: int = 0, still: bool = False,
                 idle: bool = False, use_blink: bool = True, ref_eyeblink: np.ndarray | None = None,
                 ref_pose: np.ndarray | None = None, seed: int = 0,
                 noise: np.ndarray | None = None, blink: np.ndarray | None = None) -> np.ndarray:
        """Per-frame coefficients for a clip.

        Args:
            audio: float32 16 kHz mono samples.
            source_coeffs: (73,) source face coefficients (exp 64, angles 3, trans 3, crop 3); (70,) also accepted.
            pose_style: CVAE style class 0..45.
            still: keep the source pose on every frame.
            idle: ignore the audio content (silent windows), keep its length.
            use_blink: random eye blinks (seeded); False gives none.
            ref_eyeblink: (N, >=64) reference-video coefficients whose expressions condition ExpNet (no random blink).
            ref_pose: (N, >=70) reference-video coefficients whose relative head motion is added.
            seed: seeds the blink timing and the pose latents.
            noise, blink: explicit (W, 64) latents / (T, 1) blink ratio instead of seeded draws (parity checks).
        Returns:
            (T, 70) float32: expression 64 + pose 6 per 25 fps video frame.
        Raises:
            InvalidInputError, AudioError.
        """
        if not 0 <= int(pose_style) < NUM_POSE_STYLES:
            raise InvalidInputError(f"pose_style must be 0..{NUM_POSE_STYLES - 1}; got {pose_style}")
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise AudioError(f"audio must be mono samples (N,); got shape {audio.shape}")
        source = np.asarray(source_coeffs, dtype=np.float32).reshape(-1)
        if source.shape[0] not in (70, 73):
            raise InvalidInputError(f"source_coeffs must hold 73 (or 70) values; got {source.shape[0]}")

        # 1. audio features
        windows = self.windows(audio, idle)                                      # (T, 80, 16)
        num_frames = len(windows)

        # 2. expression conditioning: source (or reference-video) expression and blink ratio
        ref_exp = np.repeat(source[None, :EXP_DIM], num_frames, axis=0)          # (T, 64)
        if blink is not None:
            ratio = np.asarray(blink, dtype=np.float32).reshape(num_frames, 1)
        else:
            ratio = blink_sequence(num_frames, random.Random(seed))
        if ref_eyeblink is not None:
            ref_exp = tile_frames(np.asarray(ref_eyeblink, dtype=np.float32)[:, :EXP_DIM], num_frames)
            ratio = np.zeros_like(ratio)
        if not use_blink:
            ratio = np.zeros_like(ratio)

        dev = self.device
        win_t = torch.from_numpy(windows).to(dev)
        with autocast(dev, self.precision):
            exp = predict_expression(self.audio2exp, win_t, torch.from_numpy(np.ascontiguousarray(ref_exp)).to(dev),
                                     torch.from_numpy(ratio).to(dev)).float()    # (T, 64)

        # 3. head pose: CVAE per 32-frame window, then smoothing
        if noise is None:
            generator = torch.Generator().manual_seed(int(seed))
            z = draw_pose_noise(num_frames, generator, self.audio2pose.config.seq_len,
                                self.audio2pose.config.latent_size)
        else:
            z = torch.as_tensor(np.asarray(noise, dtype=np.float32))
        ref_pose_t = torch.from_numpy(source[POSE].copy()).to(dev)
        with autocast(dev, self.precision):
            pose_raw = predict_pose(self.audio2pose, win_t, ref_pose_t, int(pose_style), z)
        pose = smooth_pose(pose_raw.float().cpu().numpy(), self.smoothing)       # (T, 6)

        # 4. reference pose / still mode
        if ref_pose is not None:
            pose = apply_reference_pose(pose, np.asarray(ref_pose, dtype=np.float32))
        if still:
            pose = np.repeat(source[None, POSE], num_frames, axis=0)
        coeffs = np.concatenate([exp.float().cpu().numpy(), pose], axis=1).astype(np.float32)
        logger.debug("motion: %d frames, pose style %d, still %s, idle %s", num_frames, pose_style, still, idle)
        return coeffs
