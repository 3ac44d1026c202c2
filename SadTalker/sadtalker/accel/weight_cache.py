"""Values derived from a layer's weights (transformed or folded kernels) kept on the layer until the weights change.

Kept as plain attributes, not buffers: state dicts and checkpoint keys are unchanged.
"""
from __future__ import annotations

from typing import Callable, Generic, Sequence, TypeVar

import torch
from torch import nn

T = TypeVar("T")


def version_key(tensors: Sequence[torch.Tensor | None]) -> tuple | None:
    """Identifies the current contents of `tensors` (storage and in-place version); None for inference tensors
    (no version counter: in-place updates could not be told apart)."""
    key = []
    for t in tensors:
        if t is None:
            key.append(None)
            continue
        if t.is_inference():
            return None
        key.append((t.data_ptr(), t._version, t.shape))
    return tuple(key)


class Derived(Generic[T]):
    """One value derived from some tensors, rebuilt only when one of them changes (new storage or an in-place
    update); never kept for inference tensors, whose updates cannot be seen."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: T | None = None

    def get(self, sources: Sequence[torch.Tensor | None], build: Callable[[], T]) -> T:
        key = version_key(sources)
        if key is not None and key == self._key:
            return self._value  # type: ignore[return-value]
        with torch.no_grad():
            value = build()
        if key is not None:
            self._key, self._value = key, value
        return value


def derived(owner: nn.Module, slot: str, sources: Sequence[torch.Tensor | None], build: Callable[[], T]) -> T:
    """`build()`, kept on `owner` under `slot` while `sources` are unchanged."""
    cache: Derived[T] = owner.__dict__.setdefault(f"_derived_{slot}", Derived())
    return cache.get(sources, build)
