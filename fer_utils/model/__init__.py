"""Models in PyTorch: the factory, checkpoints (file format and assembly from metadata),
temperature calibration, Grad-CAM, devices and precision, batched forward passes, ONNX export."""
