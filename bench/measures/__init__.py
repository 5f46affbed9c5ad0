"""One module per measure of issue 5.

Each has ID, TITLE, TARGET and `run(ctx) -> dict` returning `figures` (numbers), `met`
(True/False, or None when there is no target) and a one-line `summary`.
"""
