"""The bench's command line as the docs write it: `--json` with a file, or alone."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parent.parent)
if REPO not in sys.path:  # the bench is a script folder run from the repo root
    sys.path.insert(0, REPO)
cli = importlib.import_module("bench.cli")


def test_json_alone_means_stdout_and_with_a_file_that_file() -> None:
    assert cli.parse_args(["--quick", "--json"]).json == cli.STDOUT
    assert cli.parse_args(["--quick", "--json", "out.json"]).json == "out.json"
    assert cli.parse_args(["--quick"]).json is None


def test_json_alone_before_another_option_does_not_swallow_it() -> None:
    args = cli.parse_args(["--json", "--suites", "overhead"])
    assert args.json == cli.STDOUT and args.suites == "overhead"
