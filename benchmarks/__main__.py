import sys

from benchmarks.cli import main

if __name__ == "__main__":   # guarded: bench's spawned workers import this module too
    sys.exit(main())
