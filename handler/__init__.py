"""The processor sources (python/index.py, node/index.js) and their shared test vectors, shipped as package data."""
