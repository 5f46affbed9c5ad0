"""Command-line commands beyond serving: the `accounts` admin commands and the data-folder check."""
