"""Whether the data folder can be written, said in one line (not a traceback).

problem(data_dir) -> str | None   None when the folder exists (or can be made) and takes a
                                  file; else one line naming the folder, the error, and the
                                  fix (in the Docker image the gateway runs as uid 10001).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: The image's user (Dockerfile): a bind-mounted folder must belong to it.
IMAGE_UID = 10001


def problem(data_dir: Path) -> str | None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".write-check-"):
            pass
    except OSError as exc:
        return (
            f"the data folder {data_dir} is not writable ({exc.strerror}) by uid {os.getuid()}."
            f" In Docker the gateway runs as uid {IMAGE_UID}: on the host,"
            f" `chown -R {IMAGE_UID}:{IMAGE_UID} <folder mounted at {data_dir}>`."
        )
    return None
