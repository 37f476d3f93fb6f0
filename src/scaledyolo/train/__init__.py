"""Training: loss, trainer, EMA, schedule, checkpoints."""
