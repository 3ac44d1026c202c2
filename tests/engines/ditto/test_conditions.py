"""Per-frame conditions: layout, emotion vectors, source-frame indexing."""
from __future__ import annotations

import numpy as np
import pytest

from sadtalker.engines.ditto.conditions import (
    COND_DIM,
    ConditionBuilder,
    SourceConditions,
    emotion_vector,
    mirror_index,
)
from sadtalker.errors import InvalidInputError


def _source(n: int = 1) -> SourceConditions:
    return SourceConditions(np.arange(2 * n, dtype=np.float32).reshape(n, 2),
                            np.arange(6 * n, dtype=np.float32).reshape(n, 6) + 100, np.full(63, 7, np.float32))


def test_emotion_vector():
    v = emotion_vector(4)
    assert v.dtype == np.float32 and np.isclose(v.sum(), 1) and v.argmax() == 4
    assert np.isclose(v[4], np.exp(8) / (np.exp(8) + 7), rtol=1e-6)
    mix = emotion_vector([3, 4])
    assert np.isclose(mix[3], mix[4]) and mix[3] > 0.49
    for bad in (8, -1, [], [1, 9], "happy"):
        with pytest.raises(InvalidInputError, match="emotion"):
            emotion_vector(bad)


def test_layout():
    aud = np.random.RandomState(0).randn(5, 1024).astype(np.float32)
    rows = ConditionBuilder(_source(), 4)(aud)
    assert rows.shape == (5, COND_DIM) == (5, 1103) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows[:, :1024], aud)
    np.testing.assert_array_equal(rows[:, 1024:1032], np.tile(emotion_vector(4), (5, 1)))
    np.testing.assert_array_equal(rows[:, 1032:1034], np.tile([0, 1], (5, 1)))
    np.testing.assert_array_equal(rows[:, 1034:1040], np.tile(np.arange(6) + 100, (5, 1)))
    assert (rows[:, 1040:] == 7).all()


def test_video_source_ping_pongs_and_emotion_per_frame():
    assert [mirror_index(i, 3) for i in range(8)] == [0, 1, 2, 2, 1, 0, 0, 1]
    emo = np.eye(8, dtype=np.float32)[[1, 2]]
    rows = ConditionBuilder(_source(3), emo)(np.zeros((4, 1024), np.float32), start=-1)
    assert rows[:, 1032].tolist() == [0, 0, 2, 4]  # frame -1 uses frame 0
    assert rows[:, 1024:1032].argmax(1).tolist() == [1, 1, 2, 1]


def test_bad_inputs():
    with pytest.raises(InvalidInputError, match="audio features"):
        ConditionBuilder(_source())(np.zeros((4, 512), np.float32))
    with pytest.raises(InvalidInputError, match="eye_open"):
        SourceConditions(np.zeros(2, np.float32), np.zeros((1, 6), np.float32), np.zeros(63, np.float32))
    with pytest.raises(InvalidInputError, match="emotion array"):
        ConditionBuilder(_source(), np.zeros((4, 7), np.float32))
