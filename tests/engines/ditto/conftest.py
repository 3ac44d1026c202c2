"""Ditto fixtures: random-weight checkpoints in the official layouts (written once per session, ~680 MB)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ditto_checkpoints(tmp_path_factory: pytest.TempPathFactory):
    from sadtalker.engines.ditto.random_weights import write_random_checkpoints

    return write_random_checkpoints(tmp_path_factory.mktemp("ditto_ckpt"), seed=3)


@pytest.fixture(scope="session")
def ditto_networks(ditto_checkpoints):
    from sadtalker.engines.ditto.weights import load_renderer_networks

    return load_renderer_networks(ditto_checkpoints)
