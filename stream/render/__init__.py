"""sonoflow.stream.render."""
