"""backprop-bench harness: datasets, configuration, the training loop, timing and the CLI.

``python -m benchmarks --help`` lists the subcommands. Importing this package loads neither
numba, torch nor mlflow; each is imported when a command needs it.
"""
