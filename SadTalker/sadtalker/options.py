"""One set of generation options, defined once: the web front's form and API, the JSON that travels to the model
service's `predict` and is stored with each job, the command line, and every engine read it from here."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any, Literal, get_args

from sadtalker.errors import InvalidInputError


class Preprocess(str, Enum):
    """How the portrait is framed (the original's `--preprocess`)."""

    CROP = "crop"        # a square around the face
    RESIZE = "resize"    # the whole picture, short side scaled to the model size
    FULL = "full"        # the face animated inside the whole picture (pasted back)
    EXTCROP = "extcrop"  # like crop, with a wider margin
    EXTFULL = "extfull"  # like full, from the wider crop

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: "str | Preprocess") -> "Preprocess":
        """The mode named `value`; an unknown name is refused with the list of modes."""
        try:
            return cls(value)
        except ValueError:
            modes = ", ".join(p.value for p in cls)
            raise InvalidInputError(f"preprocess must be one of {modes}; got {value!r}") from None

    @property
    def full(self) -> bool:
        """The rendered face is pasted back into the whole picture."""
        return self in (Preprocess.FULL, Preprocess.EXTFULL)

    @property
    def extended(self) -> bool:
        """The crop has the wider margin."""
        return self in (Preprocess.EXTCROP, Preprocess.EXTFULL)

    @property
    def family(self) -> Literal["crop", "full"]:
        """Which mapping network (and checkpoint) drives it: mapping_00109 for the full modes, else mapping_00229."""
        return "full" if self.full else "crop"


EngineChoice = Literal["auto", "ditto", "sadtalker", "landmark"]
RefInfo = Literal["pose", "blink", "pose+blink", "all"]
PREPROCESS_MODES: tuple[str, ...] = tuple(p.value for p in Preprocess)
ENGINE_CHOICES: tuple[str, ...] = get_args(EngineChoice)
REF_INFO_CHOICES: tuple[str, ...] = get_args(RefInfo)
SIZES: tuple[int, ...] = (256, 512)
NUM_POSE_STYLES = 46      # valid ids 0..45; the original's slider allows 46, which indexes past the class table
MAX_BATCH_SIZE = 32
MAX_SEED = 2**63 - 1      # torch.manual_seed and a 64-bit database column take 0..2^63-1
MAX_IDLE_SECONDS = 300.0
MAX_ANGLES = 64

# What each option means, for the API description (OpenAPI / the predict endpoint's docs).
DESCRIPTIONS: dict[str, str] = {
    "preprocess": "framing: crop, resize, full (pasted back into the picture), extcrop, extfull",
    "still_mode": "less head motion (the original's --still)",
    "enhancer": "GFPGAN face restoration of every frame (SadTalker engine)",
    "batch_size": "frames rendered per network pass (memory vs speed)",
    "size": "face model resolution, 256 or 512",
    "pose_style": "head-motion style, 0-45",
    "expression_scale": "scales the expression coefficients, 0-3",
    "seed": "random seed for blinks and pose noise, 0 to 2^63-1; the same seed gives the same motion",
    "engine": "auto (the best installed: ditto, then sadtalker, then landmark), ditto, sadtalker, landmark",
    "input_yaw": "fixed head yaw in degrees (-90..90); several values are visited in order",
    "input_pitch": "fixed head pitch in degrees",
    "input_roll": "fixed head roll in degrees",
    "ref_info": "what a reference video drives: pose, blink, pose+blink, or all (its motion and sound)",
    "idle_mode": "no audio: the face breathes and blinks for idle_seconds (SadTalker engine)",
    "idle_seconds": "idle length in seconds",
    "use_blink": "eye blinks",
}


@dataclass(frozen=True)
class GenerationOptions:
    """What the user chose. Validated on construction, so a bad value never reaches a model (or a database)."""

    preprocess: Preprocess = Preprocess.CROP
    still_mode: bool = False
    enhancer: bool = False
    batch_size: int = 2
    size: int = 256
    pose_style: int = 0
    expression_scale: float = 1.0
    seed: int = 0
    engine: EngineChoice = "auto"
    # SadTalker engine extras (the original's CLI and web UI)
    input_yaw: tuple[float, ...] = ()
    input_pitch: tuple[float, ...] = ()
    input_roll: tuple[float, ...] = ()
    ref_info: RefInfo = "pose"
    idle_mode: bool = False
    idle_seconds: float = 5.0
    use_blink: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "preprocess", Preprocess.parse(self.preprocess))
        if self.engine not in ENGINE_CHOICES:
            raise InvalidInputError(f"engine must be one of {', '.join(ENGINE_CHOICES)}; got {self.engine!r}")
        _check_int("size", self.size)
        if self.size not in SIZES:
            raise InvalidInputError(f"size must be 256 or 512; got {self.size!r}")
        _check_range("pose_style", self.pose_style, 0, NUM_POSE_STYLES - 1)
        _check_range("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _check_range("seed", self.seed, 0, MAX_SEED, "0 and 2^63-1")
        if not _is_number(self.expression_scale) or not 0.0 <= float(self.expression_scale) <= 3.0:
            raise InvalidInputError(f"expression_scale must be a number between 0 and 3; got {self.expression_scale!r}")
        for name in ("still_mode", "enhancer", "idle_mode", "use_blink"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInputError(f"{name} must be true or false; got {getattr(self, name)!r}")
        for name in ("input_yaw", "input_pitch", "input_roll"):
            values = getattr(self, name)
            if not isinstance(values, tuple) or len(values) > MAX_ANGLES or not all(
                    _is_number(v) and -90.0 <= v <= 90.0 for v in values):
                raise InvalidInputError(f"{name} must be a list of at most {MAX_ANGLES} angles between -90 and 90 "
                                        f"degrees; got {values!r}")
        if self.ref_info not in REF_INFO_CHOICES:
            raise InvalidInputError(f"ref_info must be one of {', '.join(REF_INFO_CHOICES)}; got {self.ref_info!r}")
        if not _is_number(self.idle_seconds) or not 0.0 < float(self.idle_seconds) <= MAX_IDLE_SECONDS:
            raise InvalidInputError(
                f"idle_seconds must be a number of seconds in (0, {MAX_IDLE_SECONDS:g}]; got {self.idle_seconds!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (the preprocess mode as its name, angle lists as lists)."""
        out = asdict(self)
        out["preprocess"] = self.preprocess.value
        for name in ("input_yaw", "input_pitch", "input_roll"):
            out[name] = list(out[name])
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> "GenerationOptions":
        """From a JSON object of any subset of the options ("" or None: all defaults)."""
        return cls.from_mapping(json_object(text))

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "GenerationOptions":
        """Build from loosely typed input (form fields, JSON, Gradio values), coercing strings and floats."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InvalidInputError(f"unknown option(s): {', '.join(map(str, unknown))}")
        kwargs: dict[str, Any] = {}
        for name, raw in values.items():
            if raw is None or raw == "":
                continue
            default = known[name].default
            kwargs[name] = _coerce(name, raw, str if isinstance(default, Preprocess) else type(default))
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "GenerationOptions":
        return type(self).from_mapping({**self.to_dict(), **changes})

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """JSON Schema of the options object (the API description reads it from here)."""
        d = cls()
        numbers = {"batch_size": (1, MAX_BATCH_SIZE), "pose_style": (0, NUM_POSE_STYLES - 1),
                   "seed": (0, MAX_SEED), "expression_scale": (0.0, 3.0), "idle_seconds": (0.0, MAX_IDLE_SECONDS)}
        props: dict[str, Any] = {}
        for f in fields(cls):
            default = getattr(d, f.name)
            schema: dict[str, Any]
            if f.name == "preprocess":
                schema = {"type": "string", "enum": list(PREPROCESS_MODES), "default": default.value}
            elif f.name == "engine":
                schema = {"type": "string", "enum": list(ENGINE_CHOICES), "default": default}
            elif f.name == "ref_info":
                schema = {"type": "string", "enum": list(REF_INFO_CHOICES), "default": default}
            elif f.name == "size":
                schema = {"type": "integer", "enum": list(SIZES), "default": default}
            elif isinstance(default, bool):
                schema = {"type": "boolean", "default": default}
            elif isinstance(default, int):
                schema = {"type": "integer", "default": default}
            elif isinstance(default, float):
                schema = {"type": "number", "default": default}
            else:
                schema = {"type": "array", "items": {"type": "number", "minimum": -90, "maximum": 90},
                          "maxItems": MAX_ANGLES, "default": []}
            if f.name in numbers:
                schema["minimum"], schema["maximum"] = numbers[f.name]
                if f.name == "idle_seconds":
                    schema["exclusiveMinimum"] = schema.pop("minimum")
            schema["description"] = DESCRIPTIONS[f.name]
            props[f.name] = schema
        return {"type": "object", "properties": props, "additionalProperties": False}


def json_object(text: str | bytes | None) -> dict[str, Any]:
    """A JSON object's items ("" or None: none); anything else is refused."""
    if text is None or not text.strip():
        return {}
    try:
        values = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"options must be a JSON object ({exc})") from None
    if not isinstance(values, dict):
        raise InvalidInputError(f"options must be a JSON object; got {type(values).__name__}")
    return values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an integer; got {value!r}")


def _check_range(name: str, value: Any, low: int, high: int, words: str | None = None) -> None:
    _check_int(name, value)
    if not low <= value <= high:
        raise InvalidInputError(f"{name} must be between {words or f'{low} and {high}'}; got {value!r}")


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def parse_bool(name: str, raw: Any) -> bool:
    """true/false, yes/no, on/off, 1/0 (any case) -> bool; anything else is refused naming `name`."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise InvalidInputError(f"{name} must be true or false; got {raw!r}")


def _coerce(name: str, raw: Any, kind: type) -> Any:
    if kind is bool:
        return parse_bool(name, raw)
    if kind is int:
        if isinstance(raw, bool):
            raise InvalidInputError(f"{name} must be an integer; got {raw!r}")
        if isinstance(raw, int):
            return raw                      # exact: large seeds must not pass through a float
        text = str(raw).strip()
        if text.lstrip("+-").isdigit():
            return int(text)
        try:
            number = float(text)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{name} must be an integer; got {raw!r}") from None
        if not number.is_integer() or abs(number) > 2**53:
            raise InvalidInputError(f"{name} must be an integer; got {raw!r}")
        return int(number)
    if kind is tuple:
        items = raw if isinstance(raw, (list, tuple)) else str(raw).replace(",", " ").split()
        try:
            return tuple(float(v) for v in items)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{name} must be a list of numbers; got {raw!r}") from None
    if kind is float:
        if isinstance(raw, bool):
            raise InvalidInputError(f"{name} must be a number; got {raw!r}")
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{name} must be a number; got {raw!r}") from None
    return str(raw)
