"""One stock Anki sync server process per active account."""
