"""sonoflow.training: data, tasks, training loops, compression and export (needs the `train` extra)."""
