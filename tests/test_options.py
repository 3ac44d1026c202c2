import json

import pytest

from sadtalker.errors import InvalidInputError
from sadtalker.options import GenerationOptions, Preprocess


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
        ({"expression_scale": 9.0}, "expression_scale must be a number between"),
        ({"seed": -1}, "seed must be between 0 and 2\\^63-1"),
        ({"seed": 2**63}, "seed must be between 0 and 2\\^63-1"),
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


@pytest.mark.parametrize("seed", [0, 2**31, 2**53 + 1, 2**63 - 1])
def test_seeds_up_to_2_63_minus_1_are_kept_exactly(seed):
    """From JSON, form strings and Python ints alike (never through a float)."""
    assert GenerationOptions(seed=seed).seed == seed
    assert GenerationOptions.from_mapping({"seed": str(seed)}).seed == seed
    assert GenerationOptions.from_json(json.dumps({"seed": seed})).seed == seed


def test_json_round_trip_and_schema():
    o = GenerationOptions(preprocess="extfull", seed=7, input_yaw=(10.0, -5.0), engine="landmark", ref_info="all")
    text = o.to_json()
    assert json.loads(text)["preprocess"] == "extfull" and json.loads(text)["input_yaw"] == [10.0, -5.0]
    assert GenerationOptions.from_json(text) == o
    assert GenerationOptions.from_json("") == GenerationOptions() == GenerationOptions.from_json(None)
    schema = GenerationOptions.json_schema()
    assert set(schema["properties"]) == set(o.to_dict())  # every option described, nothing else
    assert schema["properties"]["seed"]["maximum"] == 2**63 - 1
    assert schema["properties"]["preprocess"]["enum"] == ["crop", "resize", "full", "extcrop", "extfull"]


@pytest.mark.parametrize("text, message", [("[1, 2]", "must be a JSON object"), ("{bad", "must be a JSON object"),
                                           ('{"colour": 1}', "unknown option")])
def test_bad_json_is_refused(text, message):
    with pytest.raises(InvalidInputError, match=message):
        GenerationOptions.from_json(text)


def test_preprocess_answers_what_the_modes_mean():
    assert [p.value for p in Preprocess if p.full] == ["full", "extfull"]
    assert [p.value for p in Preprocess if p.extended] == ["extcrop", "extfull"]
    assert Preprocess("extfull").family == "full" and Preprocess("resize").family == "crop"
    assert GenerationOptions(preprocess="full").preprocess is Preprocess.FULL
    with pytest.raises(InvalidInputError, match="preprocess must be one of crop, resize, full, extcrop, extfull"):
        Preprocess.parse("zoom")
