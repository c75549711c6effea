"""sonoflow.models: model cards, outputs, runtime backends (no torch in runtime/), torch architectures in arch/."""
