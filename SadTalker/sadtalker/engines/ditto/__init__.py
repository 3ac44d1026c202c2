"""The Ditto engine (antgroup/ditto-talkinghead): audio -> motion by diffusion (LMDM) in LivePortrait's keypoint space, rendered by the LivePortrait networks."""
