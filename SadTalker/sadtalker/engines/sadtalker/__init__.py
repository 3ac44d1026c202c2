"""The SadTalker engine (Zhang et al. 2023), stage by stage: source face, motion, render, paste, enhance."""
