"""The processor's use cases: `process` one task (store check, download, measurement, GPU
time) and `TaskHandler`, the consumer loop's handler that runs many at once with offsets
committed below the lowest task in flight."""
