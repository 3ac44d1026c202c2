"""One set of generation options, shared by the pipeline, the Gradio app, the CLI and the web front."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

from sadtalker.errors import InvalidInputError

Preprocess = Literal["crop", "resize", "full", "extcrop", "extfull"]
EngineChoice = Literal["auto", "sadtalker", "landmark"]
PREPROCESS_MODES: tuple[str, ...] = get_args(Preprocess)
ENGINE_CHOICES: tuple[str, ...] = get_args(EngineChoice)
SIZES: tuple[int, ...] = (256, 512)
NUM_POSE_STYLES = 46  # valid ids 0..45; the original's slider allows 46, which indexes past the class table
MAX_BATCH_SIZE = 32
RefInfo = Literal["pose", "blink", "pose+blink", "all"]
REF_INFO_CHOICES: tuple[str, ...] = get_args(RefInfo)
MAX_IDLE_SECONDS = 300.0


@dataclass(frozen=True)
class GenerationOptions:
    """What the user chose. Validated on construction, so a bad value never reaches a model."""

    preprocess: Preprocess = "crop"
    still_mode: bool = False
    enhancer: bool = False
    batch_size: int = 2
    size: int = 256
    pose_style: int = 0
    expression_scale: float = 1.0
    seed: int = 0
    engine: EngineChoice = "auto"
    # SadTalker engine extras (the original's CLI and web UI); added after the fields above, all with defaults.
    input_yaw: tuple[float, ...] = ()    # fixed head yaw in degrees; several values are visited in order
    input_pitch: tuple[float, ...] = ()
    input_roll: tuple[float, ...] = ()
    ref_video: str = ""                  # path of a reference video ("" = none)
    ref_info: RefInfo = "pose"           # what the reference video drives: pose, blink, pose+blink or all
    ref_eyeblink_video: str = ""         # a second video for the blinks only (the CLI's --ref_eyeblink != --ref_pose)
    idle_mode: bool = False              # no speech: the face breathes and blinks for idle_seconds
    idle_seconds: float = 5.0
    use_blink: bool = True

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESS_MODES:
            raise InvalidInputError(
                f"preprocess must be one of {', '.join(PREPROCESS_MODES)}; got {self.preprocess!r}"
            )
        if self.engine not in ENGINE_CHOICES:
            raise InvalidInputError(f"engine must be one of {', '.join(ENGINE_CHOICES)}; got {self.engine!r}")
        _check_int("size", self.size)
        if self.size not in SIZES:
            raise InvalidInputError(f"size must be 256 or 512; got {self.size!r}")
        _check_int("pose_style", self.pose_style)
        if not 0 <= self.pose_style < NUM_POSE_STYLES:
            raise InvalidInputError(
                f"pose_style must be between 0 and {NUM_POSE_STYLES - 1}; got {self.pose_style!r}"
            )
        _check_int("batch_size", self.batch_size)
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise InvalidInputError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}; got {self.batch_size!r}")
        if not isinstance(self.expression_scale, (int, float)) or isinstance(self.expression_scale, bool):
            raise InvalidInputError(f"expression_scale must be a number; got {self.expression_scale!r}")
        if not 0.0 <= float(self.expression_scale) <= 3.0:
            raise InvalidInputError(f"expression_scale must be between 0 and 3; got {self.expression_scale!r}")
        _check_int("seed", self.seed)
        for name in ("still_mode", "enhancer", "idle_mode", "use_blink"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInputError(f"{name} must be true or false; got {getattr(self, name)!r}")
        for name in ("input_yaw", "input_pitch", "input_roll"):
            values = getattr(self, name)
            if not isinstance(values, tuple) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and -90.0 <= v <= 90.0 for v in values):
                raise InvalidInputError(f"{name} must be a list of angles between -90 and 90 degrees; got {values!r}")
        if self.ref_info not in REF_INFO_CHOICES:
            raise InvalidInputError(f"ref_info must be one of {', '.join(REF_INFO_CHOICES)}; got {self.ref_info!r}")
        for name in ("ref_video", "ref_eyeblink_video"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInputError(f"{name} must be a file path; got {getattr(self, name)!r}")
        if not isinstance(self.idle_seconds, (int, float)) or isinstance(self.idle_seconds, bool) or not (
                0.0 < float(self.idle_seconds) <= MAX_IDLE_SECONDS):
            raise InvalidInputError(
                f"idle_seconds must be a number of seconds in (0, {MAX_IDLE_SECONDS:g}]; got {self.idle_seconds!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "GenerationOptions":
        """Build from loosely typed input (form fields, JSON, Gradio values), coercing strings and floats."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InvalidInputError(f"unknown option(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, raw in values.items():
            if raw is None or raw == "":
                continue
            default = known[name].default
            kwargs[name] = _coerce(name, raw, type(default))
        return cls(**kwargs)


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an integer; got {value!r}")


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


def switched_off(raw: str | None) -> bool:
    """Whether an on-by-default environment switch (unset: on) holds one of the false words."""
    return raw is not None and raw.strip().lower() in FALSE_WORDS


def _coerce(name: str, raw: Any, kind: type) -> Any:
    if kind is bool:
        return parse_bool(name, raw)
    if kind is int:
        if isinstance(raw, bool):
            raise InvalidInputError(f"{name} must be an integer; got {raw!r}")
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{name} must be an integer; got {raw!r}") from None
        if not number.is_integer():
            raise InvalidInputError(f"{name} must be an integer; got {raw!r}")
        return int(number)
    if kind is tuple:
        items = raw if isinstance(raw, (list, tuple)) else str(raw).replace(",", " ").split()
        try:
            return tuple(float(v) for v in items)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{name} must be a list of numbers; got {raw!r}") from None
    if kind is float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{name} must be a number; got {raw!r}") from None
    return str(raw)
