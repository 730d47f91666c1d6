"""Training: matching and losses, optimisation, checkpoints, logs, and the trainer that runs them."""
