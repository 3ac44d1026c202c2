"""Running an engine on files, as the model service does: inputs read once (`read_inputs`), then `generate`."""
from __future__ import annotations

from pathlib import Path

from sadtalker.engines.base import GenerationInputs, GenerationResult, ProgressFn
from sadtalker.io.audio import load_audio
from sadtalker.io.image import load_image
from sadtalker.io.inputs import read_inputs
from sadtalker.io.limits import InputLimits
from sadtalker.options import GenerationOptions


def generate(engine, image: Path, audio: Path | None, options: GenerationOptions, output: Path,
             progress: ProgressFn | None = None, ref_video: Path | None = None,
             ref_eyeblink_video: Path | None = None, checked: bool = True) -> GenerationResult:
    """`checked=False` skips the service's input checks (an engine's own behaviour on e.g. a silent clip)."""
    if checked:
        inputs = read_inputs(Path(image), None if audio is None else Path(audio), options, InputLimits(),
                             ref_video=ref_video, ref_eyeblink_video=ref_eyeblink_video)
    else:
        inputs = GenerationInputs(image=load_image(Path(image)),
                                  audio=None if audio is None else load_audio(Path(audio)))
    return engine.generate(inputs, options, Path(output), progress)
