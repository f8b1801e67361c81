"""Training: the optimizer and the EMA teacher (the jitted CaOPD step and the trainer land with them)."""
