"""datakit: seed tasks in, curated fine-tuning data out.

The library does the work; :mod:`datakit.cli` is a thin click layer over it.
"""

__version__ = "0.1.0"
