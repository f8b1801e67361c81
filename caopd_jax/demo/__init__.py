"""The CPU demo: base model -> plain OPD vs CaOPD -> evaluation table and plots (`python -m caopd_jax.demo`)."""
