"""Export: an account's collection and media as an Anki collection package (`.colpkg`).
job.py makes one under the account's lock (its docstring has the contract), colpkg.py writes
the package, download.py serves it on the portal."""

from gateway.export.job import EXPORT_SCRATCH, ExportError, discard, make

__all__ = ["EXPORT_SCRATCH", "ExportError", "discard", "make"]
