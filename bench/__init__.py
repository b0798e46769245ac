"""pixelpool's benchmark harness: `python bench/run.py [--quick] [--gpu] [--json FILE]`."""
