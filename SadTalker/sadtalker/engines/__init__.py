"""Talking-head engines side by side; each takes a portrait and speech and writes an mp4."""
