"""Networks of the Ditto engine: the LivePortrait renderer (appearance, motion, warping, decoder, stitching) and the LMDM motion diffusion transformer."""
