"""Face landmarks: the 468-point face mesh, its 68-point mapping, and the original's detectors."""
