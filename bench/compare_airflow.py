#!/usr/bin/env python3
"""Runs the Python DAG corpus on Apache Airflow and on Updraft and compares the outcomes
(driver of bench/compare_airflow.sh; standard library only).

Both sides are real servers on 127.0.0.1 driven through the same REST API (`/api/v2`, Airflow's
paths, which Updraft serves too), one after the other, each on a fresh home and database:

- Airflow: `airflow standalone` (API server, scheduler with the LocalExecutor, DAG processor,
  triggerer) from --airflow-python's environment, on --airflow-db (PostgreSQL: SQLite locks
  under the LocalExecutor's concurrent writes), SimpleAuthManager with a known admin password.
- Updraft: `updraft standalone`, with the same Python environment as `python.executable`.

For each side: copy the corpus into a fresh DAGs folder, create the variables and connections
every corpus DAG needs (the `setup` entries of the corpus's `expected.json`, the one place both
sides read them from), wait until every corpus DAG is parsed, unpause it and trigger it once
with its `conf` (also from `expected.json`), wait until every run has finished, then read back:
the run's state; every task instance's (task_id, map_index) → state and try number; every XCom
(task_id, map_index, key) → value; and the variables the runs write (`variables_after`).

Prints the differences (Airflow vs Updraft; skip-lists under `skipmixin_key` compared as sets,
since Airflow builds them from sets) and exits 1 if there is any. Differences between Airflow and
the corpus's own `expected.json` are printed too, as a check of the expectations. JSON of both
sides' outcomes goes to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

FINISHED = {"success", "failed"}


def log(msg: str) -> None:
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    """A small client of Airflow's REST API (`/api/v2`, bearer token from `/auth/token`)."""

    def __init__(self, base: str):
        self.base = base
        self.token = None

    def login(self, user: str, password: str) -> bool:
        body = json.dumps({"username": user, "password": password}).encode()
        req = urllib.request.Request(self.base + "/auth/token", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                self.token = json.load(r)["access_token"]
            return True
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            return False

    def call(self, method: str, path: str, body=None, ok_missing: bool = False):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
        })
        # A busy host can make a server slow to answer: reads are retried, writes are not.
        attempts = 5 if method == "GET" else 1
        for attempt in range(attempts):
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    text = r.read()
                    return json.loads(text) if text else None
            except urllib.error.HTTPError as e:
                if ok_missing and e.code == 404:
                    return None
                detail = e.read().decode("utf-8", "replace")[:500]
                raise RuntimeError(f"{method} {path}: HTTP {e.code}: {detail}") from None
            except (urllib.error.URLError, OSError) as e:
                if attempt + 1 == attempts:
                    raise RuntimeError(f"{method} {path}: {e}") from None
                time.sleep(2)

    def get(self, path: str, ok_missing: bool = False):
        return self.call("GET", path, ok_missing=ok_missing)


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


# --- the servers --------------------------------------------------------------------------------

class Server:
    name = ""

    def __init__(self, work: str, dags: str):
        self.work = work
        self.dags = dags
        self.port = free_port()
        self.api = Api(f"http://127.0.0.1:{self.port}")
        self.proc = None
        self.logfile = os.path.join(work, f"{self.name}.log")

    def command(self) -> tuple[list[str], dict]:
        raise NotImplementedError

    def credentials(self):
        raise NotImplementedError

    def start(self, timeout: float) -> None:
        cmd, env = self.command()
        logf = open(self.logfile, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                     cwd=self.work, start_new_session=True)
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"see {self.logfile}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{self.name} did not answer within {timeout:g} s; "
                                   f"see {self.logfile}")
            cred = self.credentials()
            if cred and self.api.login(*cred):
                break
            time.sleep(0.5)
        log(f"{self.name}: API up after {time.monotonic() - t0:.1f} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # leftovers of the group (task processes)
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass


class Airflow(Server):
    name = "airflow"

    def __init__(self, work: str, dags: str, python: str, db: str):
        super().__init__(work, dags)
        self.home = os.path.join(work, "airflow-home")
        os.makedirs(self.home, exist_ok=True)
        self.python = python
        self.db = db
        with open(os.path.join(self.home, "passwords.json"), "w") as f:
            json.dump({"admin": "admin"}, f)

    def command(self):
        bindir = os.path.dirname(self.python)
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("AIRFLOW__") or k.startswith("AIRFLOW_VAR_") or k.startswith("AIRFLOW_CONN_"):
                del env[k]
        env.update({
            "PATH": bindir + os.pathsep + env.get("PATH", ""),
            "AIRFLOW_HOME": self.home,
            "AIRFLOW__CORE__DAGS_FOLDER": self.dags,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": os.path.join(self.home, "passwords.json"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__API__SECRET_KEY": "compare-api-secret-key",
            "AIRFLOW__API_AUTH__JWT_SECRET": "compare-jwt-secret-0123456789abcdef0123456789",
            # the DAG processor's default is every 5 minutes for new files
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # On a small, busy host 32 tasks starting at once time out on the Execution API
            # (5 s by default) and fail before they run; neither setting changes an outcome.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        })
        if self.db:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.db
        return [os.path.join(bindir, "airflow"), "standalone"], env

    def credentials(self):
        return ("admin", "admin")


class Updraft(Server):
    name = "updraft"

    def __init__(self, work: str, dags: str, binary: str, python: str):
        super().__init__(work, dags)
        self.home = os.path.join(work, "updraft-home")
        self.binary = binary
        self.python = python

    def command(self):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("UPDRAFT__") or k.startswith("AIRFLOW__") or k.startswith("UPDRAFT_VAR_") \
                    or k.startswith("UPDRAFT_CONN_") or k.startswith("AIRFLOW_VAR_") \
                    or k.startswith("AIRFLOW_CONN_"):
                del env[k]
        env.update({
            "UPDRAFT_HOME": self.home,
            "UPDRAFT__CORE__DAGS_FOLDER": self.dags,
            "UPDRAFT__CORE__LOAD_EXAMPLES": "false",
            "UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
            "UPDRAFT__PYTHON__EXECUTABLE": self.python,
            "AIRFLOW_HOME": os.path.join(self.work, "updraft-airflow-home"),
        })
        return [self.binary, "standalone", "--host", "127.0.0.1", "--port", str(self.port)], env

    def credentials(self):
        pw = os.path.join(self.home, "standalone_admin_password.txt")
        if not os.path.exists(pw):
            return None
        with open(pw) as f:
            return ("admin", f.read().strip())


# --- one side's run -----------------------------------------------------------------------------

def setup_fixtures(api: Api, expected: dict) -> None:
    """The variables and connections of every DAG's `setup`, created through the API."""
    for dag_id, exp in expected.items():
        setup = exp.get("setup") or {}
        for key, value in (setup.get("variables") or {}).items():
            api.call("POST", "/api/v2/variables", {"key": key, "value": value})
        for conn_id, conn in (setup.get("connections") or {}).items():
            body = {"connection_id": conn_id}
            body.update(conn)
            api.call("POST", "/api/v2/connections", body)


def wait_parsed(api: Api, dag_ids: list[str], timeout: float) -> dict:
    t0 = time.monotonic()
    missing = list(dag_ids)
    while missing and time.monotonic() - t0 < timeout:
        missing = [d for d in missing if api.get(f"/api/v2/dags/{q(d)}", ok_missing=True) is None]
        if missing:
            time.sleep(1)
    errors = api.get("/api/v2/importErrors?limit=100") or {}
    return {"missing": missing, "import_errors": [
        {"file": e.get("filename"), "error": (e.get("stack_trace") or "")[-600:]}
        for e in errors.get("import_errors", [])]}


def collect(api: Api, dag_id: str, run_id: str, expected: dict) -> dict:
    base = f"/api/v2/dags/{q(dag_id)}/dagRuns/{q(run_id)}"
    run = api.get(base)
    tis = api.get(f"{base}/taskInstances?limit=1000") or {}
    tasks, tries = {}, {}
    for ti in tis.get("task_instances", []):
        name = ti["task_id"] if ti.get("map_index", -1) in (-1, None) else f"{ti['task_id']}[{ti['map_index']}]"
        tasks[name] = ti.get("state")
        tries[name] = ti.get("try_number")
    xcoms: dict = {}
    entries = api.get(f"{base}/taskInstances/~/xcomEntries?limit=1000") or {}
    for e in entries.get("xcom_entries", []):
        mi = e.get("map_index", -1)
        name = e["task_id"] if mi in (-1, None) else f"{e['task_id']}[{mi}]"
        one = api.get(f"{base}/taskInstances/{q(e['task_id'])}/xcomEntries/{q(e['key'])}"
                      f"?map_index={mi}")
        xcoms.setdefault(name, {})[e["key"]] = one.get("value") if one else None
    variables = {}
    for key in (expected.get("variables_after") or {}):
        v = api.get(f"/api/v2/variables/{q(key)}", ok_missing=True)
        variables[key] = v.get("value") if v else None
    return {"run_state": run.get("state"), "tasks": tasks, "tries": tries, "xcoms": xcoms,
            "variables_after": variables}


def run_side(server: Server, expected: dict, timeout: float) -> dict:
    dag_ids = sorted(expected)
    server.start(timeout=300)
    api = server.api
    setup_fixtures(api, expected)
    parsed = wait_parsed(api, dag_ids, timeout=300)
    if parsed["missing"]:
        log(f"{server.name}: not parsed: {parsed['missing']}; import errors: "
            f"{[e['file'] for e in parsed['import_errors']]}")
    runs = {}
    for dag_id in dag_ids:
        if dag_id in parsed["missing"]:
            continue
        api.call("PATCH", f"/api/v2/dags/{q(dag_id)}", {"is_paused": False})
        run = api.call("POST", f"/api/v2/dags/{q(dag_id)}/dagRuns",
                       {"logical_date": None, "conf": expected[dag_id].get("conf") or {}})
        runs[dag_id] = run["dag_run_id"]
    log(f"{server.name}: triggered {len(runs)} runs")
    t0 = time.monotonic()
    pending = dict(runs)
    while pending and time.monotonic() - t0 < timeout:
        for dag_id, run_id in list(pending.items()):
            run = api.get(f"/api/v2/dags/{q(dag_id)}/dagRuns/{q(run_id)}")
            if run.get("state") in FINISHED:
                pending.pop(dag_id)
        if pending:
            time.sleep(1)
    log(f"{server.name}: runs finished after {time.monotonic() - t0:.1f} s"
        + (f"; still running: {sorted(pending)}" if pending else ""))
    out = {"parse": parsed, "dags": {}}
    for dag_id, run_id in runs.items():
        out["dags"][dag_id] = collect(api, dag_id, run_id, expected[dag_id])
        out["dags"][dag_id]["run_id"] = run_id
        out["dags"][dag_id]["unfinished"] = dag_id in pending
    return out


# --- comparison ---------------------------------------------------------------------------------

def canonical_xcoms(xcoms: dict) -> dict:
    out = {}
    for ti, keys in (xcoms or {}).items():
        out[ti] = {}
        for k, v in keys.items():
            if k == "skipmixin_key" and isinstance(v, dict):
                v = {kk: sorted(vv) if isinstance(vv, list) else vv for kk, vv in v.items()}
            out[ti][k] = v
    return out


def outcome_view(side: dict | None, with_tries: bool = True) -> dict:
    """What is compared for one DAG."""
    if side is None:
        return {"missing": True}
    view = {
        "run_state": side.get("run_state"),
        "tasks": side.get("tasks") or {},
        "xcoms": canonical_xcoms(side.get("xcoms")),
        "variables_after": side.get("variables_after") or {},
    }
    if with_tries:
        view["tries"] = {k: v for k, v in (side.get("tries") or {}).items() if v not in (None, 1, 0)}
    return view


def diff(a: dict, b: dict, path: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        p = f"{path}.{k}" if path else str(k)
        if k not in a:
            out.append(f"{p}: only on the right: {json.dumps(b[k], sort_keys=True)}")
        elif k not in b:
            out.append(f"{p}: only on the left: {json.dumps(a[k], sort_keys=True)}")
        elif isinstance(a[k], dict) and isinstance(b[k], dict):
            out.extend(diff(a[k], b[k], p))
        elif a[k] != b[k]:
            out.append(f"{p}: {json.dumps(a[k], sort_keys=True)} != {json.dumps(b[k], sort_keys=True)}")
    return out


def expected_view(exp: dict) -> dict:
    tries = {k: v for k, v in (exp.get("tries") or {}).items() if v not in (None, 1, 0)}
    return {"run_state": exp.get("run_state"), "tasks": exp.get("tasks") or {},
            "xcoms": canonical_xcoms(exp.get("xcoms")),
            "variables_after": exp.get("variables_after") or {}, "tries": tries}


# --- main ---------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True, help="the updraft binary")
    ap.add_argument("--python", required=True,
                    help="Python with apache-airflow-core 3.3 (runs Airflow, and is Updraft's "
                         "python.executable)")
    ap.add_argument("--airflow-python", default="",
                    help="Python that runs Airflow's servers (default --python); its "
                         "environment needs a driver for --airflow-db")
    ap.add_argument("--airflow-db", default="",
                    help="Airflow's metadata database (SQLAlchemy URL, an empty database)")
    ap.add_argument("--corpus", required=True, help="folder of corpus DAG files + expected.json")
    ap.add_argument("--only", nargs="*", default=[], help="DAG ids to run (default: all)")
    ap.add_argument("--skip-airflow", action="store_true",
                    help="compare Updraft against expected.json only")
    ap.add_argument("--airflow-json", default="",
                    help="reuse Airflow's outcomes from an earlier --out instead of running it")
    ap.add_argument("--timeout", type=float, default=600, help="seconds for every run to finish")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--out", default="", help="write both sides' outcomes here (JSON)")
    args = ap.parse_args()

    with open(os.path.join(args.corpus, "expected.json")) as f:
        expected = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    if args.only:
        expected = {k: v for k, v in expected.items() if k in args.only}
    work = tempfile.mkdtemp(prefix="updraft-compare-")
    results = {"corpus": os.path.abspath(args.corpus), "dags": sorted(expected)}
    try:
        sides = []
        if args.airflow_json:
            with open(args.airflow_json) as f:
                results["airflow"] = json.load(f)["airflow"]
        elif not args.skip_airflow:
            sides.append(("airflow", lambda d: Airflow(work, d, args.airflow_python or args.python,
                                                       args.airflow_db)))
        sides.append(("updraft", lambda d: Updraft(work, d, args.binary, args.python)))
        for name, make in sides:
            dags = os.path.join(work, f"dags-{name}")
            os.makedirs(dags)
            for f in os.listdir(args.corpus):
                if f.endswith(".py"):
                    shutil.copy(os.path.join(args.corpus, f), dags)
            server = make(dags)
            try:
                results[name] = run_side(server, expected, args.timeout)
            except Exception as e:  # one side failing to run is reported, not a crash
                log(f"{name}: {e}")
                results[name] = {"error": str(e), "dags": {}}
            finally:
                server.stop()
    finally:
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2, sort_keys=True)
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    differences = 0
    updraft = results["updraft"]
    airflow = results.get("airflow")
    if updraft.get("error") or (airflow and airflow.get("error")):
        differences += 1
    for dag_id in sorted(expected):
        u = outcome_view(updraft["dags"].get(dag_id))
        if airflow is not None:
            a = outcome_view(airflow["dags"].get(dag_id))
            d = diff(a, u)
            if d:
                differences += len(d)
                print(f"{dag_id}: Airflow (left) vs Updraft (right): {len(d)} difference(s)")
                for line in d:
                    print(f"    {line}")
            else:
                print(f"{dag_id}: identical")
            e = diff(expected_view(expected[dag_id]), a)
            if e:
                print(f"    (expected.json (left) vs Airflow (right): {len(e)} difference(s))")
                for line in e:
                    print(f"        {line}")
        else:
            d = diff(expected_view(expected[dag_id]), u)
            differences += len(d)
            print(f"{dag_id}: expected.json (left) vs Updraft (right): "
                  + (f"{len(d)} difference(s)" if d else "identical"))
            for line in d:
                print(f"    {line}")
    print(f"{len(expected)} DAGs, {differences} difference(s)")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
