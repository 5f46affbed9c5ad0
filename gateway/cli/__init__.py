"""The command line: one argparse tree (tree.py) and a module per command group: the server
commands (server.py), local mode (dev.py), accounts (accounts.py), backups (backups.py), and
the data-folder check (datadir.py)."""
