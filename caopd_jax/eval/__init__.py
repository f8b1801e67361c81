"""Evaluation of accuracy and calibration (`core.evaluate`); the command line arrives with the evaluation issue."""
