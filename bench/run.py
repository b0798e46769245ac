"""Benchmark pixelpool against raw diffusers and under load.

    python bench/run.py [--quick] [--gpu] [--json [FILE]] [--suites overhead,encode]

Suites, results and how to read them: docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
