"""Regression gates (filled in by the regression-gate issue)."""


def add_subcommand(sub, add_config_options):
    pass
