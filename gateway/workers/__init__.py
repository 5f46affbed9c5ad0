"""One stock Anki sync server process per active account: the pool, its slots and ledger, the
account folder's lock and files, the derived worker passwords, the box each process runs in
(containment/) and the one collection sync per account (syncsession/)."""
