"""``python -m studies families|probe-threads|probe-contention|gpu-profile|gemm-shapes``: the lab's entry point.

``families`` has its parser here; the other subcommands pass the rest of the command line to
their module's own ``main``.
"""
from __future__ import annotations

import argparse
import sys

PASS_THROUGH = {"probe-threads": "studies.threads_probe", "probe-contention": "studies.contention_probe",
                "gpu-profile": "studies.gpu_profile", "gemm-shapes": "studies.gemm_shapes"}


def main(argv: list[str] | None = None) -> int:
    import importlib

    from studies import families
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASS_THROUGH:
        return importlib.import_module(PASS_THROUGH[argv[0]]).main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m studies", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="families|" + "|".join(PASS_THROUGH))
    families.add_parser(sub)
    for name, module in PASS_THROUGH.items():
        sub.add_parser(name, help=f"see python -m studies {name} --help ({module})")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
