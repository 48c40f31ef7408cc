"""Afterburn: pre-virtualization for x86 kernels."""

__version__ = "0.1.0"
