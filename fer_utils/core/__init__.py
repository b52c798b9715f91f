"""The vocabulary every layer shares, torch-free: errors, class labels and dataset numberings,
where files live, safe writes and the one output guard, stop signals, the training configuration,
the architectures table, and what a checkpoint says about itself."""
