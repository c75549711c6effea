"""sonoflow.stream.commands: one module per CLI command (add_arguments + run)."""
