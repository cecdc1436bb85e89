"""lambda-builder: native dependencies for AWS Lambda, built in Lambda-compatible containers."""

__version__ = "0.1.0"
