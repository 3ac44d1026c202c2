"""Reading and writing media: the source image, the driving audio, video through ffmpeg."""
