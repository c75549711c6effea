"""sonoflow.models.runtime: inference backends behind one protocol. Never imports torch at module level."""
