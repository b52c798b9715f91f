"""Training and its measurement: the loop, transforms, run folders, distillation, several
processes (DDP), and evaluation (metrics, calibration of a checkpoint)."""
