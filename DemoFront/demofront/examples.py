"""Examples a visitor can try with one click: portraits and voice clips shipped in static/examples (licences in its
README), and sentences for the text-to-speech option."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    file: str   # under static/examples/
    title: str


PORTRAITS = (Example("astronaut.jpg", "Astronaut (Eileen Collins)"), Example("cameraman.jpg", "Cameraman"))
CLIPS = (Example("hello.wav", "Hello (5 s)"), Example("story.wav", "The quick brown fox (12 s)"),
         Example("bonjour.wav", "Bonjour, in French (4 s)"))
TEXTS = ("Hello! I am a talking head, and I can say anything you type here.",
         "Good morning. Today's forecast: sunshine in the afternoon, and a light breeze by the sea.",
         "Peter Piper picked a peck of pickled peppers. How many pickled peppers did Peter Piper pick?")
