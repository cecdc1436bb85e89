"""lambda-builder: native dependencies for AWS Lambda, built in Lambda-compatible containers.

The package root: the version only; it must import nothing, so the no-op fast path stays cheap.
"""

__version__ = "0.1.0"
