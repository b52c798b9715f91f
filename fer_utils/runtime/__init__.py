"""What a model sees and runs on without torch: preprocessing (normalization, TTA views, batch
bounds) and ONNX Runtime sessions with the user cache of exports."""
