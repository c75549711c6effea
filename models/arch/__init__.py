"""sonoflow.models.arch: torch modules (training and export only)."""
