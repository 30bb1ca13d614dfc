"""The runner: Fabric pipeline, stage callbacks, sequential layer-wise quantization."""
