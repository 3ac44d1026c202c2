"""The model service's core, independent of Gradio: engines loaded once, inputs checked once, one call."""
