"""Pallas kernels, each with its pure-JAX reference in caopd_jax.losses; `registry` picks the token-statistics
implementation a loss uses. The kernels' workbench (float32 checks, timings, tile sweeps) and their status are in the
repository's top-level kernels/ folder."""
