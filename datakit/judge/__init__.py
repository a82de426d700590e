"""Candidate responses, pointwise and pairwise judging, preference pairs.

Parsing: :mod:`datakit.judge.parse`; pair rule: :mod:`datakit.judge.pairs`; run-directory
logs and merged view: :mod:`datakit.judge.store`; orchestration: :mod:`datakit.judge.run`.
"""
