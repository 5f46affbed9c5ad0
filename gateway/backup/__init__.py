"""Backups: `python -m gateway backup` and `python -m gateway restore` (their arguments and
exit codes: gateway/cli/backups.py).

    backup --to DIR|s3://bucket/prefix [--keep N] [--include-secret] [--wait SECONDS]
    backup --list --to DEST
    backup verify DEST[/snapshots/NAME]
    restore --from DIR|s3://bucket/prefix [--snapshot NAME] [--account NAME ...]
            [--exclude NAME ...] [--wait S]

snapshot.py takes consistent snapshots while people sync, asking the gateways through
quiesce.py (the running gateways' side is gate.py, with sessions.py), and signs their manifest
(manifest.py); retention.py lists and prunes them; verify.py checks one; restore.py puts
accounts back under their locks, all or none (swap.py); store.py is the folder or S3 behind
all. Exit status: 0; 1 with one line saying what to do (BackupError, or an OSError of the
destination: missing and not creatable, not writable, full), or when an account was not backed
up (the snapshot of the others is kept; each missed account is named on stderr with the
reason). `backup verify`: 0 the snapshot is sound (a restore would take it); 1 it is not
(each problem on stderr: a restore refuses it); 2 it could not be checked (no
backup.manifest_key, no such store or snapshot).
"""
