"""A user full-uploading a collection in a loop, in its own process (load for measure 2).

    python -m bench.uploader --port P --key HKEY --body FILE.zst [--chunk BYTES] --duration S
                             --max-uploads N --out RESULT.json

The body is the zstd-compressed collection, compressed once beforehand: a real uploading user
compresses on their own machine, so that CPU must not be spent on this one. The request is
framed as the 26.9 client frames it (4 KiB HTTP chunks) unless `--chunk` says otherwise.
Stops after `--duration` seconds or `--max-uploads` uploads, whichever comes first (an upload
under way is finished), or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path

from bench import httpload


async def loop(
    port: int, key: str, body: bytes, chunk: int, duration: float, max_uploads: int
) -> dict:
    request = httpload.upload_request(f"127.0.0.1:{port}", key, body, chunk)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    deadline = time.monotonic() + duration
    seconds: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    while not stop.is_set() and time.monotonic() < deadline and len(seconds) < max_uploads:
        started = time.perf_counter()
        try:
            response = await httpload.Connection(port).send(request, keep_alive=False)
        except (OSError, httpload.ProtocolError, asyncio.IncompleteReadError, TimeoutError):
            errors += 1
            await asyncio.sleep(0.1)
            continue
        seconds.append(time.perf_counter() - started)
        statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
    return {"uploads": len(seconds), "seconds": seconds, "statuses": statuses, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.uploader")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--chunk", type=int, default=httpload.CLIENT_CHUNK, help="HTTP chunk size")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--max-uploads", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = asyncio.run(
        loop(
            args.port,
            args.key,
            args.body.read_bytes(),
            args.chunk,
            args.duration,
            args.max_uploads,
        )
    )
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
