"""The build cache: what invalidates a build (keys), where finished builds are kept (store),
and the no-op fast path that answers an unchanged command before the CLI loads.

Importing this package imports nothing: `cache.noop` must stay standard-library only.

Stage cache: keys builds and keeps what they made; must not start a container or run a build.
"""
