"""Training loop, optimizer/schedule, checkpoints and loggers."""
