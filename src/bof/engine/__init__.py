"""One run's machinery: set-up, the loops, in-run logging, the evaluator and the model a config gets, the
optimizer."""
