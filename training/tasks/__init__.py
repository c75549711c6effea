"""sonoflow.training.tasks: one module per trainable task."""
