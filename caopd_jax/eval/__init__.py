"""Evaluation of accuracy and calibration.

  core             evaluate: rollouts of a model on Examples, scored under a protocol
  protocols        the eval protocols (paper = the reference's eval, the default; strict = our verifiers)
  reference_rules  the reference's answer, tool-call and confidence rules, restated (the paper protocol)
  scoring          score / summarise inference records (no model): what `--score FILE` runs
  report           inference.json, metrics.json, reliability.png and the metrics table
  __main__, compare, curves   the command lines
"""
