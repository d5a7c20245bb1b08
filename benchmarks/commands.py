"""Subcommands beyond ``run``: bench, report, regress (filled in by their issues)."""


def add_subcommands(sub, add_config_options, impl_list, positive_int):
    pass
