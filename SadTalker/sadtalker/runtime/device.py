"""The compute device and numeric precision, resolved once when an engine loads.

fp32 is exact: TF32 (on by default in PyTorch for cuDNN convolutions on Ampere and later) is turned off, so CUDA
fp32 matches the CPU within the parity tolerances (the keypoint softmax divides logits by 0.1 and would magnify a
10-bit mantissa). tf32 turns it on; fp16 / bf16 run the networks under autocast.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Literal

import torch

from sadtalker.errors import InvalidInputError

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "tf32", "fp16", "bf16"]
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; a CUDA device that is not there is refused."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise InvalidInputError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError("device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def configure_precision(device: torch.device, precision: Precision = "fp32") -> None:
    """Set the process-wide TF32 switches for `precision` (they matter on CUDA only)."""
    if precision not in ("fp32", "tf32", *AUTOCAST_DTYPES):
        raise InvalidInputError(f"precision must be fp32, tf32, fp16 or bf16; got {precision!r}")
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if device.type == "cuda":
        logger.info("CUDA precision %s (TF32 %s)", precision, "on" if tf32 else "off")


def autocast(device: torch.device, precision: Precision = "fp32") -> contextlib.AbstractContextManager:
    """Mixed precision for a network pass (fp16/bf16), a no-op for fp32 and tf32."""
    if precision not in AUTOCAST_DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
