"""sonoflow.stream.render: pure drawing functions that turn a frame + header into the overlay.

Entry point: :func:`sonoflow.stream.render.annotate.annotate`.
"""
