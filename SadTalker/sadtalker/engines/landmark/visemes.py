"""Typed text -> speech and mouth shapes from the same synthesis: espeak-ng (Debian's libespeak-ng.so.1, through its
C API) speaks the text and reports each phoneme with the exact sample it starts at; the phonemes map to visemes
(jaw opening, lip width) per video frame. For the front's text-to-speech path: `speak_with_visemes`."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from dataclasses import dataclass

import numpy as np

from sadtalker.engines.landmark.mouth import MouthTrack, frame_samples
from sadtalker.errors import AudioError

logger = logging.getLogger(__name__)

# espeak-ng's speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED, _EVENT_PHONEME = 0, 7
_CHARS_UTF8 = 1
_RATE = 1

# (jaw opening 0..1, lip width -1 rounded .. 1 spread) per espeak-ng phoneme mnemonic (English set; others fall back
# on their first letter, then on NEUTRAL)
NEUTRAL = (0.3, 0.0)
VISEMES: dict[str, tuple[float, float]] = {
    # closed lips
    "p": (0.0, 0.0), "b": (0.0, 0.0), "m": (0.0, 0.0),
    # lower lip to upper teeth; tongue between the teeth
    "f": (0.1, 0.1), "v": (0.1, 0.1), "T": (0.2, 0.1), "D": (0.2, 0.1),
    # tongue tip up, teeth near
    "t": (0.2, 0.15), "d": (0.2, 0.15), "n": (0.15, 0.1), "l": (0.3, 0.1), "s": (0.15, 0.35), "z": (0.15, 0.35),
    # rounded, protruded
    "S": (0.2, -0.6), "Z": (0.2, -0.6), "tS": (0.2, -0.6), "dZ": (0.2, -0.6), "r": (0.25, -0.5), "w": (0.1, -1.0),
    "j": (0.2, 0.5), "k": (0.3, 0.0), "g": (0.3, 0.0), "N": (0.3, 0.0), "h": (0.4, 0.0), "x": (0.3, 0.0),
    # vowels: open a, mid e/@, close spread i, rounded o/u
    "a": (1.0, 0.05), "a#": (0.8, 0.0), "A:": (1.0, -0.1), "A@": (0.9, -0.1), "V": (0.75, 0.0), "aa": (1.0, 0.05),
    "@": (0.45, 0.0), "3": (0.45, 0.0), "3:": (0.5, -0.1), "@L": (0.4, 0.0), "@2": (0.4, 0.0), "@5": (0.4, -0.2),
    "E": (0.65, 0.4), "e": (0.6, 0.45), "e@": (0.6, 0.35),
    "I": (0.35, 0.7), "i": (0.3, 0.8), "i:": (0.3, 0.9), "I2": (0.35, 0.6), "i@": (0.35, 0.6),
    "0": (0.75, -0.5), "O:": (0.6, -0.7), "O@": (0.6, -0.6), "o": (0.5, -0.8), "o@": (0.55, -0.7),
    "U": (0.35, -0.8), "u:": (0.3, -1.0), "U@": (0.35, -0.8), "u": (0.3, -1.0),
}
# diphthongs: first target for the first 55%, then the second
DIPHTHONGS = {"aI": ("a", "i"), "aU": ("a", "u:"), "eI": ("e", "i"), "oU": ("o", "u:"), "OI": ("O:", "i"),
              "e@": ("e", "@"), "i@": ("i", "@"), "U@": ("U", "@"), "aI@": ("a", "@"), "aU@": ("a", "@")}
PAUSE = ("_", "_:", "_!", "_|", "||", "|")
COARTICULATION_S = 0.05   # the shape eases between phonemes over about this long (each side)
LEAD_S = 0.02             # the lips move this much ahead of the sound (anticipation)


@dataclass(frozen=True)
class Phoneme:
    """One phoneme as espeak-ng spoke it: its mnemonic and where it starts in the audio (seconds)."""

    name: str
    start: float


@dataclass(frozen=True)
class SpokenText:
    """Speech from espeak-ng: mono float32 samples at sample_rate, and the phonemes in order."""

    samples: np.ndarray
    sample_rate: int
    phonemes: list[Phoneme]


class _Espeak:
    """The library, loaded and initialised once per process; one synthesis at a time (its state is global)."""

    _lock = threading.Lock()
    _instance: _Espeak | None = None

    class _Event(ctypes.Structure):
        class _Id(ctypes.Union):
            _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

        _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                    ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                    ("user_data", ctypes.c_void_p), ("id", _Id)]

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as exc:
            raise AudioError("text to speech needs espeak-ng's library (apt-get install espeak-ng)") from exc
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.sample_rate = int(self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                                          _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT))
        if self.sample_rate <= 0:
            raise AudioError("espeak-ng could not start (its data files are missing?)")
        self._chunks: list[np.ndarray] = []
        self._phonemes: list[tuple[int, str]] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                         ctypes.POINTER(self._Event))
        self._callback = callback_type(self._on_audio)  # kept referenced: the library holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def shared(cls) -> _Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_audio(self, wav, count: int, events) -> int:
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_PHONEME:
                self._phonemes.append((int(events[i].sample), events[i].id.string.decode("ascii", "replace")))
            i += 1
        return 0

    def speak(self, text: str, voice: str, words_per_minute: int | None) -> SpokenText:
        with self._lock:
            self._chunks, self._phonemes = [], []
            if self.lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:
                raise AudioError(f"espeak-ng has no voice {voice!r}")
            if words_per_minute is not None:
                self.lib.espeak_SetParameter(_RATE, int(words_per_minute), 0)
            data = text.encode("utf-8")
            if self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None) != 0:
                raise AudioError("espeak-ng could not speak the text")
            self.lib.espeak_Synchronize()
            chunks, phonemes = self._chunks, self._phonemes
        if not chunks:
            raise AudioError("espeak-ng produced no audio for the text")
        samples = np.concatenate(chunks).astype(np.float32) / 32768.0
        return SpokenText(samples=samples, sample_rate=self.sample_rate,
                          phonemes=[Phoneme(name, sample / self.sample_rate) for sample, name in phonemes])


def speak(text: str, voice: str = "en", words_per_minute: int | None = None) -> SpokenText:
    """Speak `text` with espeak-ng's `voice` (a language or language+variant, e.g. 'en', 'en-us+f3').

    Raises:
        AudioError: espeak-ng is missing, does not know the voice, or produced nothing.
    """
    return _Espeak.shared().speak(text, voice, words_per_minute)


def viseme_of(name: str) -> tuple[float, float]:
    """(jaw opening, lip width) for one espeak-ng phoneme mnemonic; stress and length marks are ignored."""
    name = name.strip("',%=!")
    if name in VISEMES:
        return VISEMES[name]
    if name in DIPHTHONGS:
        return VISEMES.get(DIPHTHONGS[name][0], NEUTRAL)
    if name[:2] in VISEMES:
        return VISEMES[name[:2]]
    return VISEMES.get(name[:1], NEUTRAL)


def viseme_track(phonemes: list[Phoneme], samples: np.ndarray, sample_rate: int, num_frames: int,
                 fps: int = 25) -> MouthTrack:
    """Per-frame mouth controls from timed phonemes: each phoneme's viseme held over its span (diphthongs glide),
    eased across the boundaries, opening scaled by the speech's loudness around each frame (stress opens more)
    and shut in pauses."""
    t = (np.arange(num_frames) + 0.5) / fps + LEAD_S  # each frame shows the middle of its 40 ms
    jaw, width = np.zeros(num_frames), np.zeros(num_frames)
    fine = 1.0 / (4 * fps)
    grid = np.arange(0.0, num_frames / fps + 2 * COARTICULATION_S + fine, fine)  # a finer grid, then averaged
    g_jaw, g_width = np.zeros_like(grid), np.zeros_like(grid)
    ends = [p.start for p in phonemes[1:]] + [len(samples) / sample_rate]
    for p, end in zip(phonemes, ends):
        if p.name in PAUSE or end <= p.start:
            continue
        span = (grid >= p.start) & (grid < end)
        name = p.name.strip("',%=!")
        if name in DIPHTHONGS:
            first, second = (VISEMES.get(n, NEUTRAL) for n in DIPHTHONGS[name])
            glide = np.clip((grid[span] - p.start) / (end - p.start) - 0.55, 0.0, 0.45) / 0.45
            g_jaw[span] = first[0] + (second[0] - first[0]) * glide
            g_width[span] = first[1] + (second[1] - first[1]) * glide
        else:
            g_jaw[span], g_width[span] = viseme_of(name)
    k = max(1, int(round(COARTICULATION_S / fine)))
    kernel = np.hanning(2 * k + 3)[1:-1]
    kernel /= kernel.sum()
    g_jaw = np.convolve(g_jaw, kernel, mode="same")
    g_width = np.convolve(g_width, kernel, mode="same")
    jaw = np.interp(t, grid, g_jaw)
    width = np.interp(t, grid, g_width)
    # loudness: stressed syllables open a little more, quiet ones less; silence closes
    chunks = frame_samples(samples_at(samples, sample_rate, 16000), num_frames, 16000, fps)
    db = 10.0 * np.log10(np.mean(chunks.astype(np.float64) ** 2, axis=1) + 1e-18)
    active = db > -55.0
    ref = float(np.percentile(db[active], 90)) if active.any() else 0.0
    loudness = np.clip((db - (ref - 30.0)) / 30.0, 0.0, 1.0) * active
    gain = 0.75 + 0.25 * np.clip((db - (ref - 12.0)) / 12.0, 0.0, 1.0)
    opening = np.clip(jaw * gain, 0.0, 1.0)
    return MouthTrack(opening=opening.astype(np.float32), width=np.clip(width, -1, 1).astype(np.float32),
                      loudness=loudness.astype(np.float32))


def samples_at(samples: np.ndarray, rate: int, wanted: int) -> np.ndarray:
    if rate == wanted:
        return samples
    import soxr

    return soxr.resample(samples, rate, wanted, quality="HQ").astype(np.float32)


def speak_with_visemes(text: str, voice: str = "en", fps: int = 25, sample_rate: int = 16000,
                       words_per_minute: int | None = None) -> tuple[np.ndarray, MouthTrack]:
    """Speech for `text` at `sample_rate` (float32 mono) and its mouth controls for every video frame, from
    espeak-ng's own phoneme timing. The track has round(seconds * fps) frames, the engine's count.

    Raises:
        AudioError: espeak-ng is missing, does not know the voice, or produced nothing.
    """
    spoken = speak(text, voice, words_per_minute)
    samples = samples_at(spoken.samples, spoken.sample_rate, sample_rate)
    num_frames = max(1, int(round(len(samples) / sample_rate * fps)))
    return samples, viseme_track(spoken.phonemes, samples, sample_rate, num_frames, fps)
