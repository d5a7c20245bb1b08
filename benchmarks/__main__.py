import sys

try:
    from benchmarks.cli import main
except ModuleNotFoundError as exc:       # a python without requirements.txt: one line, no traceback
    print(f"backprop-bench: {sys.executable} cannot import {exc.name!r}: run commands with the bench "
          "virtualenv's python (.tox/bench/bin/python -m benchmarks ..., made by `tox -e bench`) "
          "or install requirements.txt into this one", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":   # guarded: bench's spawned workers import this module too
    from benchmarks.leave import leave
    leave(main())
