"""Prediction on photos and videos: the Predictor facade and its classifier backends (ONNX
Runtime or PyTorch), frames in and tracked faces out, and the video writers. Torch-free at import."""
