#!/usr/bin/env python3
"""Windmill's orchestrator scenario on Updraft with Python DAG files (the Airflow peer's own
files): chain40 (40 chained @task fibo(10)) and chain10_long (10 chained @task fibo(33)), run
through the stock Airflow Task SDK by `updraft standalone`. Prints JSON on stdout and a table on
stderr. Standard library only.

For each mode (warm worker pool on, and off = every try starts Python cold) and round: a fresh
UPDRAFT_HOME, `standalone` on 127.0.0.1, the two DAG files, one trigger each (one after the
other). Reported per run: wall = run end_date - the driver's clock just before the trigger
request; the sum of the tasks' own run times (end_date - start_date, what the tasks cost with
the SDK's in-process overhead); the transitions (downstream start_date - upstream end_date); and
for chain10_long, wall - sum (the target: <= 0.5 s).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
from datetime import datetime

from standalone_api import Api, free_port

PEER_DAGS = "/work/shared/peers/airflow/dags"
PEER_RESULTS = "/work/shared/peers/airflow/results.json"


def log(msg: str) -> None:
    print(f"[windmill] {msg}", file=sys.stderr, flush=True)


def ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def run_mode(binary: str, python: str, warm: bool, work: str, timeout: float) -> dict:
    home = tempfile.mkdtemp(prefix=f"home-{'warm' if warm else 'cold'}-", dir=work)
    dags = os.path.join(home, "dags")
    os.makedirs(dags)
    for name in ("chain40.py", "chain10_long.py"):
        shutil.copy(os.path.join(PEER_DAGS, name), dags)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "UPDRAFT_HOME": home,
        "UPDRAFT__PYTHON__EXECUTABLE": python,
        "UPDRAFT__PYTHON__WARM_POOL": "true" if warm else "false",
        "UPDRAFT__CORE__LOAD_EXAMPLES": "false",
        "UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
    }
    logf = open(os.path.join(home, "standalone.log"), "w")
    proc = subprocess.Popen([binary, "standalone", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=logf, stderr=subprocess.STDOUT,
                            start_new_session=True)
    api = Api(port, home)
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"standalone exited; see {home}/standalone.log")
            if time.monotonic() - t0 > 180:
                raise RuntimeError("standalone did not list the DAGs in time")
            if api.token is None and not api.login():
                time.sleep(0.1)
                continue
            try:
                listed = api.call("GET", "/api/v2/dags?limit=100")
            except (urllib.error.URLError, OSError):
                listed = None
            ids = {d["dag_id"] for d in (listed or {}).get("dags", [])}
            if {"chain40", "chain10_long"} <= ids:
                break
            time.sleep(0.1)
        # Let the warm worker finish importing (it is a shortcut: tries run cold until then).
        time.sleep(5)
        out = {}
        for dag_id in ("chain40", "chain10_long"):
            t_trigger = time.time()
            run = api.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})
            run_id = run["dag_run_id"]
            deadline = time.monotonic() + timeout
            while True:
                run = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
                if run["state"] in ("success", "failed"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{dag_id} did not finish in {timeout} s")
                time.sleep(0.05)
            tis = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
                                  "?limit=1000")["task_instances"]
            tis.sort(key=lambda t: t["task_id"])
            runs = [ts(t["end_date"]) - ts(t["start_date"]) for t in tis]
            trans = [ts(b["start_date"]) - ts(a["end_date"]) for a, b in zip(tis, tis[1:])]
            wall = ts(run["end_date"]) - t_trigger
            out[dag_id] = {
                "state": run["state"],
                "wall_s": round(wall, 3),
                "sum_task_run_s": round(sum(runs), 3),
                "overhead_s": round(wall - sum(runs), 3),
                "task_run_median_s": round(statistics.median(runs), 3),
                "transition_median_s": round(statistics.median(trans), 3) if trans else None,
                "transition_mean_s": round(statistics.mean(trans), 3) if trans else None,
                "first_start_after_trigger_s": round(ts(tis[0]["start_date"]) - t_trigger, 3),
            }
            log(f"{'warm' if warm else 'cold'} {dag_id}: {out[dag_id]}")
        return out
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def peer() -> dict:
    try:
        with open(PEER_RESULTS) as f:
            doc = json.load(f)
    except OSError:
        return {}
    out = {}
    for name in ("chain40", "chain10_long"):
        walls, sums = [], []
        for rnd in doc.get("rounds", []):
            b = rnd.get("benchmarks", {}).get(name) or {}
            if b.get("total_wall_s"):
                walls.append(b["total_wall_s"])
                sums.append(b.get("sum_task_durations_s"))
        if walls:
            out[name] = {"wall_s": walls, "sum_task_durations_s": sums,
                         "mean_wall_s": round(statistics.mean(walls), 2)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--modes", nargs="+", default=["warm", "cold"], choices=["warm", "cold"])
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="updraft-windmill-")
    result = {"binary": args.binary, "loadavg_before": os.getloadavg(), "modes": {}}
    for mode in args.modes:
        result["modes"][mode] = [run_mode(args.binary, args.python, mode == "warm", work,
                                          args.timeout) for _ in range(args.rounds)]
    result["airflow_3_3_2_peer"] = peer()
    shutil.rmtree(work, ignore_errors=True)
    doc = json.dumps(result, indent=2)
    print(doc)
    if args.out:
        with open(args.out, "w") as f:
            f.write(doc + "\n")
    for mode, rounds in result["modes"].items():
        for r in rounds:
            c40, c10 = r["chain40"], r["chain10_long"]
            log(f"{mode}: chain40 {c40['wall_s']} s (target 3 s, transition median "
                f"{c40['transition_median_s']} s); chain10_long {c10['wall_s']} s = sum of task "
                f"runs {c10['sum_task_run_s']} s + {c10['overhead_s']} s (target +0.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
