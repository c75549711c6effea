"""sonoflow.stream.imaging: sector finding, calibration and frame-quality measures (numpy/OpenCV)."""
