"""Synthetic studies: the demo study and the tests' small fixture."""
