"""The stock sync server's memory on large honest collections (issue 16: the default of
`workers.max_memory_megs` must never hurt them).

One stock server (the gateway's default worker command), reached directly by the real `anki`
client: a full upload and a full download of a collection of `--megabytes` MB, then a media
sync of `--files` files up and down. The server's `/proc` status is sampled every 20 ms:
VmHWM (peak resident set) and the peak of VmData (the private writable memory RLIMIT_DATA
counts), in MiB, after each phase.

    python -m bench.worker_memory [--megabytes 100] [--files 20000] [--file-bytes 4096]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from bench import collection
from gateway.config import Config
from gateway.workers.process import start_worker
from tests.ankiclient import Client

USER, PASSWORD = "bench", "bench-password-1"


class Sampler(threading.Thread):
    """Peak VmRSS and VmData of one process, sampled every `period` seconds."""

    def __init__(self, pid: int, period: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.peak = {"VmRSS": 0, "VmData": 0, "Threads": 0}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            for line in text.splitlines():
                key, _, value = line.partition(":")
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], int(value.split()[0]))
            time.sleep(self.period)

    def phase(self) -> dict[str, float]:
        """The peaks since the last call (MiB; threads as a count), then starts afresh."""
        time.sleep(2 * self.period)
        out = {k: round(v / 1024, 1) if k != "Threads" else v for k, v in self.peak.items()}
        self.peak = dict.fromkeys(self.peak, 0)
        return out


async def main(
    megabytes: float, files: int, file_bytes: int, compressible: bool
) -> dict[str, object]:
    scratch = Path(tempfile.mkdtemp(prefix="worker-memory-"))
    # The gateway's default worker command (config.py).
    command = Config(data_dir=scratch).worker_command()
    worker = await start_worker(
        command=command,
        account=USER,
        secret=PASSWORD,
        collections_dir=scratch / "server",
        max_payload_megs=100,
    )
    sampler = Sampler(worker.pid)
    sampler.start()
    url = f"http://127.0.0.1:{worker.port}/"
    figures: dict[str, object] = {
        "megabytes": megabytes,
        "compressible": compressible,
        "files": files,
        "file_bytes": file_bytes,
    }
    try:
        figures["idle"] = sampler.phase()
        made = time.monotonic()
        collection.make(scratch / "up", megabytes, compressible=compressible)
        figures["collection_bytes"] = (scratch / "up" / "collection.anki2").stat().st_size
        figures["make_s"] = round(time.monotonic() - made, 1)
        up = Client(scratch / "up")
        await asyncio.to_thread(up.login, USER, PASSWORD, url)
        await asyncio.to_thread(up.full_sync, upload=True)
        figures["full_upload"] = sampler.phase()
        down = Client(scratch / "down")
        await asyncio.to_thread(down.login, USER, PASSWORD, url)
        await asyncio.to_thread(down.full_sync, upload=False)
        figures["full_download"] = sampler.phase()
        media_dir = Path(up.col.media.dir())
        for i in range(files):
            (media_dir / f"m{i:05d}.bin").write_bytes(os.urandom(file_bytes))
        started = time.monotonic()
        await asyncio.to_thread(up.sync_media, 1800)
        figures["media_up_s"] = round(time.monotonic() - started, 1)
        figures["media_upload"] = sampler.phase()
        started = time.monotonic()
        await asyncio.to_thread(down.sync_media, 1800)
        figures["media_down_s"] = round(time.monotonic() - started, 1)
        figures["media_download"] = sampler.phase()
        figures["downloaded_files"] = len(os.listdir(down.col.media.dir()))
        up.close()
        down.close()
    finally:
        sampler.done.set()
        await worker.stop()
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=100)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--file-bytes", type=int, default=4096)
    parser.add_argument(
        "--compressible",
        action="store_true",
        help="notes that zstd shrinks about 4:1, so the body inflates near the stock server's "
        "own cap (3 x MAX_SYNC_PAYLOAD_MEGS) while it stays under the cap on the wire",
    )
    args = parser.parse_args()
    run = main(args.megabytes, args.files, args.file_bytes, args.compressible)
    print(json.dumps(asyncio.run(run), indent=1))
