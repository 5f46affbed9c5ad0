"""Runs the measures, writes `results.json` after each one, then the report and its plots."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import procs, report, stats
from bench.context import Context, Settings

MEASURES = {
    1: "bench.measures.full_sync",
    2: "bench.measures.contention",
    3: "bench.measures.overhead",
    4: "bench.measures.login",
    5: "bench.measures.cognito_calls",
    6: "bench.measures.memory",
    7: "bench.measures.many_users",
    8: "bench.measures.capacity",
    9: "bench.measures.cluster",
}
#: Measures that run only when named with --only (several gateway processes: slow).
OPT_IN = {9}
RESULTS = "results.json"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of the gateway against stock sync servers (docs/benchmarks.md).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="seconds, tiny sizes: proves the script works"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/out"),
        help="folder for results.json, report.md and plots (default: bench/out)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated measure numbers to (re)run, e.g. 1,3; the "
        "others are kept from an earlier results.json of the same mode",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each measure, wait up to SECONDS for the machine to be less than 25 %% "
        "busy (a shared machine's other work lands in every figure); default: no wait",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and logs")
    parser.add_argument("--no-plots", action="store_true", help="no PNGs (plots need matplotlib)")
    return parser.parse_args(argv)


def selected(only: str) -> list[int]:
    if not only.strip():
        return [m for m in MEASURES if m not in OPT_IN]
    chosen = sorted({int(x) for x in only.split(",") if x.strip()})
    unknown = [x for x in chosen if x not in MEASURES]
    if unknown:
        raise SystemExit(f"python -m bench: no measure {unknown}; choose from {list(MEASURES)}")
    return chosen


def versions() -> dict[str, str]:
    out = {}
    for dist in ("anki", "aiohttp", "moto", "boto3", "zstandard"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    nginx = procs.nginx_binary()
    if nginx:
        done = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
        out["nginx"] = (done.stderr or done.stdout).strip().split("/")[-1]
    else:
        out["nginx"] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=procs.REPO,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=procs.REPO,
            check=True,
        ).stdout.strip()
        out["gateway_commit"] = commit + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        out["gateway_commit"] = "unknown"
    return out


def load_previous(path: Path, quick: bool) -> dict[str, Any]:
    """An earlier results.json of the same mode in the output folder, else {}."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if previous.get("meta", {}).get("quick") != quick:
        return {}
    return previous


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    ids = selected(args.only)
    settings = Settings.for_mode(args.quick)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    meta = {
        "command": command.strip(),
        "quick": args.quick,
        "machine": procs.machine(),
        "versions": versions(),
        "settings": {k: v for k, v in vars(settings).items()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    previous = load_previous(out / RESULTS, args.quick) if args.only else {}
    measures: dict[str, Any] = previous.get("measures", {})
    if previous:
        # The run that made the other figures stays the headline; the rerun is recorded.
        rerun = {"command": meta["command"], "measures": ids, "started": meta["started"]}
        meta = {**previous["meta"], "reruns": [*previous["meta"].get("reruns", []), rerun]}
    results: dict[str, Any] = {"meta": meta, "measures": measures}
    began = time.monotonic()
    failed = False
    ctx = Context.open(settings, out, keep=args.keep)
    try:
        for number in ids:
            module = importlib.import_module(MEASURES[number])
            print(f"bench: {number}. {module.TITLE}", flush=True)
            busy = (
                procs.wait_until_quiet(0.25, args.wait_quiet)
                if args.wait_quiet
                else procs.cpu_busy(settings.busy_sample_s)
            )
            started = time.monotonic()
            load_before = os.getloadavg()[0]
            try:
                result = module.run(ctx)
            except Exception:
                failed = True
                trace = traceback.format_exc()
                print(trace, file=sys.stderr)
                result = {"error": trace.strip().splitlines()[-1], "met": False, "figures": {}}
            result = {
                "title": module.TITLE,
                "target": module.TARGET,
                **result,
                "seconds": round(time.monotonic() - started, 1),
                "busy_before": busy,
                "load_before": load_before,
                "load_after": os.getloadavg()[0],
            }
            measures[str(number)] = result
            ctx.results[str(number)] = result
            status = "error" if "error" in result else ("met" if result["met"] else "missed")
            if result.get("met") is None and "error" not in result:
                status = "reported"
            print(
                f"bench: {number}. {status}: {result.get('summary', result.get('error'))} "
                f"({result['seconds']} s)",
                flush=True,
            )
            if not previous:
                results["meta"]["seconds"] = round(time.monotonic() - began, 1)
            (out / RESULTS).write_text(json.dumps(stats.clean(results), indent=1) + "\n")
    finally:
        ctx.close(failed)
    results["measures"] = {k: measures[k] for k in sorted(measures, key=int)}
    (out / RESULTS).write_text(json.dumps(stats.clean(results), indent=1) + "\n")
    written = report.write(stats.clean(results), out, plots=not (args.quick or args.no_plots))
    print(f"bench: wrote {out / RESULTS} and {written} in {time.monotonic() - began:.0f} s")
    return 1 if failed else 0
