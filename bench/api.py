#!/usr/bin/env python3
"""API benchmark: `GET /api/v2/dags?limit=100` and one run's task-instance list, with 1,000
DAGs and 100,000 task instances in PostgreSQL, load from wrk on loopback.

Run through bench/api.sh (builds the binaries, installs wrk when missing). Standard library
only. Prints a table to stderr and a JSON document to stdout (also bench/api-last-run.json).

For each endpoint two wrk runs: one connection (the median latency of requests one at a time)
and `--connections` connections (requests per second under load, with its median latency).
The loaded run also reports CPU time per request of the server, of its PostgreSQL backends and
of wrk (from /proc and wrk's rusage): on a shared, busy host requests per second move with
everyone else's load, while the CPU a request costs moves much less.
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def log(msg):
    print(f"[api-bench] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(base_url, sql):
    subprocess.run(["psql", base_url, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True,
                   stdout=subprocess.DEVNULL)


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU time of a live process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def backends(base_url, db):
    """CPU seconds of each PostgreSQL backend connected to `db` (the server's pool)."""
    out = subprocess.run(
        ["psql", base_url, "-Atc", f"SELECT pid FROM pg_stat_activity WHERE datname = '{db}'"],
        check=True, capture_output=True, text=True).stdout
    cpu = {int(p): cpu_seconds(int(p)) for p in out.split()}
    return {p: c for p, c in cpu.items() if c is not None}


def wrk(url, token, connections, seconds, server=None, pg=None):
    """One wrk run; with `server` (its pid) and `pg` ((url, db) of its database) also the CPU
    milliseconds per request of the server, its database backends and wrk."""
    threads = min(2, connections)
    before = (cpu_seconds(server), backends(*pg)) if server else None
    proc = subprocess.Popen(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-H", f"Authorization: Bearer {token}", url],
        stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"wrk failed on {url}:\n{out}")
    median = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise SystemExit(f"wrk saw {non2xx.group(1)} error responses from {url}:\n{out}")
    result = {"median_ms": round(to_ms(median), 3), "p99_ms": round(to_ms(p99), 3),
              "requests_per_s": round(rps, 1)}
    if before:
        n = int(re.search(r"(\d+) requests in", out).group(1))
        pg_after = backends(*pg)
        pg_cpu = sum(c - before[1].get(p, 0.0) for p, c in pg_after.items())
        result["cpu_ms_per_request"] = {
            "server": round((cpu_seconds(server) - before[0]) / n * 1e3, 3),
            "postgres": round(pg_cpu / n * 1e3, 3),
            "wrk": round((usage.ru_utime + usage.ru_stime) / n * 1e3, 3),
        }
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--seeder", required=True)
    ap.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/test")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()

    base = args.pg_url.rsplit("/", 1)[0]
    db = "updraft_api_bench"
    psql(args.pg_url, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    psql(args.pg_url, f"CREATE DATABASE {db}")
    url = f"{base}/{db}"
    t0 = time.monotonic()
    seeded = json.loads(subprocess.run([args.seeder, url], check=True, capture_output=True,
                                       text=True).stdout.strip().splitlines()[-1])
    log(f"seeded {seeded['dags']} DAGs, {seeded['task_instances']} task instances "
        f"in {time.monotonic() - t0:.1f} s")

    home = tempfile.mkdtemp(prefix="updraft-api-bench-")
    port = free_port()
    env = dict(os.environ, UPDRAFT_HOME=home, UPDRAFT__DATABASE__URL=url,
               UPDRAFT__CORE__LOAD_EXAMPLES="false", UPDRAFT__LOGGING__LEVEL="warn",
               UPDRAFT__CORE__DAGS_FOLDER=os.path.join(home, "dags"))
    password = "bench-password-0123"
    subprocess.run([args.binary, "users", "create", "-u", "bench", "-r", "admin", "-p", password],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    server = subprocess.Popen([args.binary, "api-server", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        api = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{api}/api/v2/version", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("api-server did not start")
                time.sleep(0.1)
        req = urllib.request.Request(
            f"{api}/auth/token", method="POST",
            data=json.dumps({"username": "bench", "password": password}).encode(),
            headers={"Content-Type": "application/json"})
        token = json.loads(urllib.request.urlopen(req).read())["access_token"]
        endpoints = {
            "dags_limit_100": f"{api}/api/v2/dags?limit=100",
            "task_instances_of_one_run": f"{api}/api/v2/dags/{seeded['dag_id']}/dagRuns/"
                                         f"{urllib.parse.quote(seeded['run_id'], safe='')}"
                                         f"/taskInstances?limit=100",
        }
        results = {"seed": seeded, "connections": args.connections, "seconds": args.seconds,
                   "endpoints": {}}
        for name, u in endpoints.items():
            check = urllib.request.Request(u, headers={"Authorization": f"Bearer {token}"})
            body = json.loads(urllib.request.urlopen(check).read())
            items = next(v for k, v in body.items() if isinstance(v, list))
            log(f"{name}: {len(items)} items of {body.get('total_entries')}")
            wrk(u, token, 1, 2)  # warm-up
            single = wrk(u, token, 1, args.seconds)
            loaded = wrk(u, token, args.connections, args.seconds, server=server.pid,
                         pg=(args.pg_url, db))
            results["endpoints"][name] = {"items": len(items), "one_connection": single,
                                          f"{args.connections}_connections": loaded}
    finally:
        server.terminate()
        server.wait(timeout=10)
        psql(args.pg_url, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")

    log(f"{'endpoint':<28} {'median 1 conn':>14} {'median load':>12} {'p99 load':>10} {'req/s':>9}"
        f"  CPU ms/request: server, postgres, wrk")
    for name, r in results["endpoints"].items():
        load = r[f"{args.connections}_connections"]
        cpu = load["cpu_ms_per_request"]
        log(f"{name:<28} {r['one_connection']['median_ms']:>11.2f} ms {load['median_ms']:>9.2f} ms "
            f"{load['p99_ms']:>7.2f} ms {load['requests_per_s']:>9.0f}"
            f"  {cpu['server']:.3f}, {cpu['postgres']:.3f}, {cpu['wrk']:.3f}")
    text = json.dumps(results, indent=2)
    with open(os.path.join(HERE, "api-last-run.json"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
