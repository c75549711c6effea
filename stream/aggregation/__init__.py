"""sonoflow.stream.aggregation."""
