"""sonoflow.training.data: datasets from the simulator and from real archives."""
