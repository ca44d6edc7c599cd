"""Training: devices and precision, models, the one fit loop (`learner`) and its callbacks (LR finder, one-cycle,
early stopping, keep-best), `run.prepare` (the only route from a spec to a Learner) and `run.train_run`, experiments,
verdicts, scoring and the exported model. Imports `engine.data` and `engine.store`, never `engine.results`."""
