"""The landmark engine: animates the portrait itself from its face mesh and the sound, with no downloaded weights."""
