"""Stage pipeline: the build's actions, each a small named step run against the build container.

steps: system packages, sources, pip, collect, prune and strip, copy out, prefix reuse, and the
order they run in; bundle: the library guess and the repair and audit. Actions never pick images,
modes or policies: they read them from the context the build resolved beforehand.
"""
