"""Pallas kernels with pure-JAX references elsewhere in the package (see kernels/README.md at the top level)."""
