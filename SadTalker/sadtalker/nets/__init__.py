"""Neural networks of the SadTalker engine, one per file; weights are loaded by `sadtalker.weights`."""
