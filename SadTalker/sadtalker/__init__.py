"""Talking-head generation: our implementation of SadTalker's inference plus a weight-free landmark engine."""
