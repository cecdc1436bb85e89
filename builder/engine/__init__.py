"""The container engine: the socket API, the Docker client, the build container, images, emulation.

Knows nothing of recipes, builds or artifacts: it runs containers and makes images for whoever asks.
Importing this package imports nothing (the no-op fast path uses `engine.socketapi` alone).
"""
