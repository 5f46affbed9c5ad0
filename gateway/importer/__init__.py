"""`python -m gateway accounts import DIR [--dry-run]`: take over an earlier server's
collections. The run is takeover.py (its module docstring has the contract); folder.py reads a
folder, judge.py checks its collection, match.py finds its Cognito user, move.py moves it in,
mediadb.py rebuilds the media database."""

from gateway.importer.takeover import main, run

__all__ = ["main", "run"]
