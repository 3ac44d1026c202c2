import pytest

from sadtalker.errors import InvalidInputError
from sadtalker.options import GenerationOptions


def test_defaults_match_the_original_web_ui():
    o = GenerationOptions()
    assert (o.preprocess, o.still_mode, o.enhancer, o.batch_size, o.size, o.pose_style) == ("crop", False, False, 2, 256, 0)


@pytest.mark.parametrize("pose_style", [0, 45])
def test_pose_style_bounds_accepted(pose_style):
    assert GenerationOptions(pose_style=pose_style).pose_style == pose_style


@pytest.mark.parametrize("pose_style", [-1, 46, 100])
def test_pose_style_out_of_range_is_rejected_with_the_range(pose_style):
    with pytest.raises(InvalidInputError, match="pose_style must be between 0 and 45"):
        GenerationOptions(pose_style=pose_style)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"preprocess": "zoom"}, "preprocess must be one of"),
        ({"size": 300}, "size must be 256 or 512"),
        ({"batch_size": 0}, "batch_size must be between"),
        ({"expression_scale": 9.0}, "expression_scale must be between"),
        ({"still_mode": "yes"}, "still_mode must be true or false"),
    ],
)
def test_bad_values_name_the_option(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        GenerationOptions(**kwargs)


def test_from_mapping_coerces_form_strings():
    o = GenerationOptions.from_mapping(
        {"preprocess": "full", "still_mode": "true", "enhancer": "0", "batch_size": "4", "size": "512.0", "pose_style": 3.0}
    )
    assert (o.preprocess, o.still_mode, o.enhancer, o.batch_size, o.size, o.pose_style) == ("full", True, False, 4, 512, 3)


def test_from_mapping_rejects_unknown_and_fractional():
    with pytest.raises(InvalidInputError, match="unknown option"):
        GenerationOptions.from_mapping({"colour": "red"})
    with pytest.raises(InvalidInputError, match="pose_style must be an integer"):
        GenerationOptions.from_mapping({"pose_style": "2.5"})


def test_environment_switches_are_off_only_for_a_false_word():
    from sadtalker.options import switched_off

    assert all(switched_off(word) for word in ("0", " OFF ", "False", "no"))
    assert not any(switched_off(word) for word in (None, "", "1", "on", "maybe"))
