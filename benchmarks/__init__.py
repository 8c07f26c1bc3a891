"""genrec-bench: the harness (data, features, evaluation, runner, report, CLI).

Importing this package is cheap: nothing heavy (torch, transformers) is imported here.
"""

__version__ = "0.1.0"
