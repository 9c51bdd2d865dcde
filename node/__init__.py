"""Civitas: a federated peer-to-peer node for sharing open image models."""

# The one place the version is written: pyproject.toml reads it from here (setuptools'
# dynamic version), `civitas --version` and /.well-known/civitas print it.
__version__ = "0.1.0"
