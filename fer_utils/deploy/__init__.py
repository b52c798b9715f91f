"""Serving the model: the Gradio app and the live webcam loop."""
