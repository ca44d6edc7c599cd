"""Loupe's engine: everything the app does, in plain PyTorch, PIL and pandas. Never imports streamlit: a script can
do all of it by importing `engine`, and every step has a command (`python -m engine --help`).

Four packages, imported one way (each imports only the ones listed above it), plus the schema and the CLI:
  engine.spec     the run spec's schema: dataclasses, defaults, names and help texts, validation, JSON (no I/O)
  engine.store    where things are kept: LOUPE_HOME, the runs database, drafts, background jobs
  engine.data     data in: sources, labels, split, images and the pixel cache, augmentation, loaders, health, cleaner
  engine.train    models, the fit loop and its callbacks, prepare/train_run, experiments, verdicts, scoring, export
  engine.results  interpretation, re-scoring, Grad-CAM, likely wrong labels, the report
  engine.cli      `python -m engine ...`
"""
from engine.errors import UserError

__all__ = ["UserError"]
