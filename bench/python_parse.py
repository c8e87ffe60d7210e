#!/usr/bin/env python3
"""Python DAG parsing benchmark (driver of bench/python_parse.sh; standard library only).

1. Generates --files small Airflow-style DAG files (3-5 tasks each: `@dag`/`@task`,
   `with DAG(...)`, `BashOperator`, `EmptyOperator`, dependencies) into a temporary folder.
2. Cold parse through the CLI: a fresh UPDRAFT_HOME (fresh SQLite store) with that folder as
   `core.dags_folder`; times `updraft dags list -o json`, which scans the folder with the Python
   parser pool, converts every DAG and stores it, then lists them.
3. Cold parse by the scheduler: `updraft standalone` on another fresh home; time from spawn until
   the REST API lists every DAG.
4. A changed file re-parsed and live: with that standalone running, rewrites one file with one
   more task and times until `GET /api/v2/dags/{id}/tasks` shows the new task; --changes times,
   at random moments, for every `scheduler.dag_dir_list_interval` given with --intervals.
5. With --airflow, the same folder through Airflow's own `DagBag` (one process, as `airflow dags
   reserialize` parses) plus serialization, in the same Python environment.

JSON on stdout (and --out), a table on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error

from standalone_api import Api, free_port


def log(msg: str) -> None:
    print(f"[python-parse] {msg}", file=sys.stderr, flush=True)


def r3(x):
    return None if x is None else round(x, 3)


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def proc_cpu(pid: int) -> float:
    """User+system seconds of a live process and its reaped children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:15]) / tick


# --- DAG files ---------------------------------------------------------------------------------

def dag_file(i: int, extra_task: str | None = None) -> str:
    """One small DAG file; three styles in turn. `extra_task` adds one Bash task at the end."""
    dag_id = f"pyparse_{i:04d}"
    style = i % 3
    if style == 0:
        extra = ""
        if extra_task:
            extra = f"    t >> BashOperator(task_id={extra_task!r}, bash_command='echo extra')\n"
        return textwrap.dedent(f'''\
            """Bench DAG {i}: TaskFlow."""
            import pendulum
            from airflow.sdk import dag, task
            from airflow.providers.standard.operators.bash import BashOperator


            @dag(dag_id={dag_id!r}, schedule="@daily", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
                 catchup=False, tags=["bench", "taskflow"])
            def build():
                @task
                def extract():
                    return {{"n": {i}}}

                @task
                def transform(d: dict):
                    return d["n"] * 2

                @task
                def load(v: int):
                    print(v)

                t = load(transform(extract())) >> BashOperator(task_id="notify", bash_command="echo done {i}")
            ''') + extra + "\n\nbuild()\n"
    if style == 1:
        extra = ""
        if extra_task:
            extra = (f"    end >> BashOperator(task_id={extra_task!r}, "
                     "bash_command='echo extra')\n")
        return textwrap.dedent(f'''\
            """Bench DAG {i}: classic operators."""
            from datetime import datetime, timedelta

            from airflow.sdk import DAG
            from airflow.providers.standard.operators.bash import BashOperator
            from airflow.providers.standard.operators.empty import EmptyOperator

            with DAG(
                dag_id={dag_id!r},
                schedule=timedelta(hours={1 + i % 12}),
                start_date=datetime(2026, 1, 1),
                catchup=False,
                default_args={{"retries": 1, "retry_delay": timedelta(seconds=30)}},
                tags=["bench", "classic"],
            ) as dag:
                start = EmptyOperator(task_id="start")
                a = BashOperator(task_id="a", bash_command="echo a {i}")
                b = BashOperator(task_id="b", bash_command="echo b {i}", retries=2)
                end = EmptyOperator(task_id="end", trigger_rule="all_done")
                start >> [a, b] >> end
            ''') + extra
    extra = ""
    if extra_task:
        extra = f"    report >> EmptyOperator(task_id={extra_task!r})\n"
    return textwrap.dedent(f'''\
        """Bench DAG {i}: mixed."""
        import pendulum
        from airflow.sdk import DAG, task
        from airflow.providers.standard.operators.bash import BashOperator
        from airflow.providers.standard.operators.empty import EmptyOperator

        with DAG({dag_id!r}, schedule="{i % 60} * * * *",
                 start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
                 params={{"size": {i}}}):
            @task(retries=1)
            def count(size=None):
                return {i}

            begin = EmptyOperator(task_id="begin")
            run = BashOperator(task_id="run", bash_command="echo {{{{ params.size }}}}")
            report = count()
            begin >> run >> report
        ''') + extra


def write_files(folder: str, n: int) -> None:
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        with open(os.path.join(folder, f"dag_{i:04d}.py"), "w") as f:
            f.write(dag_file(i))


# --- Updraft ------------------------------------------------------------------------------------

def base_env(home: str, folder: str, python: str, interval: str | None = None) -> dict:
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("UPDRAFT__"):
            del env[k]
    env.update({
        "UPDRAFT_HOME": home,
        "UPDRAFT__CORE__DAGS_FOLDER": folder,
        "UPDRAFT__CORE__LOAD_EXAMPLES": "false",
        "UPDRAFT__PYTHON__EXECUTABLE": python,
        "AIRFLOW_HOME": os.path.join(home, "airflow-home"),
    })
    if interval:
        env["UPDRAFT__SCHEDULER__DAG_DIR_LIST_INTERVAL"] = interval
    return env


def import_errors_in(home: str) -> list[tuple]:
    db = sqlite3.connect(os.path.join(home, "updraft.db"))
    try:
        return db.execute("SELECT filename, message FROM import_error").fetchall()
    finally:
        db.close()


def become_subreaper() -> bool:
    """Processes orphaned below this one (the CLI's parser processes, which exit after the CLI
    when their stdin closes) are re-parented here, so their CPU time can be collected."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap_orphans() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def cold_cli(binary: str, folder: str, python: str, work: str, n: int) -> dict:
    home = os.path.join(work, "home-cli")
    env = base_env(home, folder, python)
    load = loadavg()
    reaper = become_subreaper()
    cpu0 = children_cpu()
    t0 = time.monotonic()
    p = subprocess.run([binary, "dags", "list", "-o", "json"], env=env, capture_output=True,
                       text=True, timeout=1800)
    wall = time.monotonic() - t0
    if reaper:
        reap_orphans()
    cpu = children_cpu() - cpu0
    if p.returncode != 0:
        raise RuntimeError(f"updraft dags list failed ({p.returncode}): {p.stderr[-2000:]}")
    listed = json.loads(p.stdout)
    errors = import_errors_in(home)
    res = {
        "command": "updraft dags list -o json",
        "wall_s": r3(wall),
        "cpu_s": r3(cpu),
        "cpu_includes_parser_processes": reaper,
        "dags_listed": len(listed),
        "import_errors": len(errors),
        "loadavg_before": load,
        "loadavg_after": loadavg(),
    }
    if errors:
        res["first_import_error"] = errors[0][1][:2000]
    log(f"cold CLI: {len(listed)} DAGs, {len(errors)} import errors in {wall:.2f} s "
        f"({cpu:.1f} CPU s)")
    if len(listed) != n:
        log(f"WARNING: expected {n} DAGs")
    # The same command again on the now populated store: a new process, so every file is
    # parsed again (the parse cache lives in the process), but nothing in the store changes.
    t0 = time.monotonic()
    p = subprocess.run([binary, "dags", "list", "-o", "json"], env=env, capture_output=True,
                       text=True, timeout=1800)
    res["second_run_wall_s"] = r3(time.monotonic() - t0)
    log(f"second CLI run (new process, store already filled): {res['second_run_wall_s']} s")
    return res


class Standalone:
    def __init__(self, binary: str, work: str, folder: str, python: str, interval: str | None):
        tag = interval or "default"
        self.home = os.path.join(work, f"home-standalone-{tag}")
        self.port = free_port()
        self.env = base_env(self.home, folder, python, interval)
        self.env["UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "true"
        self.binary = binary
        self.logfile = os.path.join(work, f"standalone-{tag}.log")
        self.proc = None
        self.api = Api(self.port, self.home)

    def start(self, n: int, timeout: float = 1800) -> dict:
        logf = open(self.logfile, "w")
        load = loadavg()
        t0 = time.monotonic()
        self.proc = subprocess.Popen([self.binary, "standalone", "--host", "127.0.0.1",
                                      "--port", str(self.port)], env=self.env, stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        logged_in_at = None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"standalone exited with {self.proc.returncode}; see {self.logfile}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("standalone did not list every DAG in time")
            if self.api.token is None:
                if self.api.login():
                    logged_in_at = time.monotonic() - t0
                else:
                    time.sleep(0.05)
                    continue
            try:
                page = self.api.get("/api/v2/dags?limit=1")
            except (urllib.error.URLError, OSError):
                page = None
            if page and page.get("total_entries", 0) >= n:
                break
            time.sleep(0.1)
        wall = time.monotonic() - t0
        errs = self.api.get("/api/v2/importErrors?limit=5") or {}
        res = {
            "api_ready_s": r3(logged_in_at),
            "all_dags_listed_s": r3(wall),
            "import_errors": errs.get("total_entries"),
            "loadavg_before": load,
        }
        log(f"standalone ({self.env.get('UPDRAFT__SCHEDULER__DAG_DIR_LIST_INTERVAL', 'default')}"
            f" interval): API up after {r3(logged_in_at)} s, all {n} DAGs listed after {wall:.2f} s")
        return res

    def tasks(self, dag_id: str) -> set[str]:
        doc = self.api.get(f"/api/v2/dags/{dag_id}/tasks") or {}
        return {t["task_id"] for t in doc.get("tasks", [])}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def live_changes(sa: Standalone, folder: str, n: int, changes: int, seed: int) -> dict:
    rng = random.Random(seed)
    lat = []
    cpu_idle = None
    # Cost of the periodic rescans with nothing changed: the standalone's CPU over 10 s.
    c0, t0 = proc_cpu(sa.proc.pid), time.monotonic()
    time.sleep(10)
    cpu_idle = (proc_cpu(sa.proc.pid) - c0) / (time.monotonic() - t0)
    for k in range(changes):
        i = rng.randrange(n)
        dag_id = f"pyparse_{i:04d}"
        new_task = f"added_{k}"
        before = sa.tasks(dag_id)
        if new_task in before:
            raise RuntimeError(f"{dag_id} already has {new_task}")
        time.sleep(rng.uniform(0.2, 3.0))  # a random phase against the scan interval
        path = os.path.join(folder, f"dag_{i:04d}.py")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(dag_file(i, extra_task=new_task))
        os.rename(tmp, path)  # as an editor or `git pull` replaces a file
        t0 = time.monotonic()
        while True:
            if new_task in sa.tasks(dag_id):
                break
            if time.monotonic() - t0 > 300:
                raise RuntimeError(f"{dag_id}: {new_task} never became visible")
            time.sleep(0.02)
        d = time.monotonic() - t0
        lat.append(d)
        log(f"  change {k + 1}/{changes}: {dag_id} + {new_task} live after {d:.3f} s")
    return {
        "changes": changes,
        "latency_s": [r3(x) for x in lat],
        "median_s": r3(statistics.median(lat)),
        "max_s": r3(max(lat)),
        "min_s": r3(min(lat)),
        "idle_rescan_cpu_cores": r3(cpu_idle),
        "loadavg_after": loadavg(),
    }


# --- Airflow ------------------------------------------------------------------------------------

AIRFLOW_DAGBAG = r'''
import json, os, sys, time
t_start = time.monotonic()
folder = sys.argv[1]
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = folder
os.environ.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "0")
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
t_imported = time.monotonic()
bag = DagBag(dag_folder=folder, bundle_path=folder, safe_mode=True,
             load_op_links=False)
t_parsed = time.monotonic()
sizes = 0
for dag in bag.dags.values():
    sizes += len(json.dumps(DagSerialization.to_dict(dag), default=str))
t_done = time.monotonic()
print(json.dumps({
    "import_airflow_s": t_imported - t_start,
    "dagbag_s": t_parsed - t_imported,
    "serialize_s": t_done - t_parsed,
    "dags": len(bag.dags),
    "import_errors": len(bag.import_errors),
}))
'''


def airflow_dagbag(python: str, folder: str, work: str) -> dict:
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = os.path.join(work, "airflow-home")
    load = loadavg()
    cpu0 = children_cpu()
    t0 = time.monotonic()
    p = subprocess.run([python, "-c", AIRFLOW_DAGBAG, folder], env=env, capture_output=True,
                       text=True, timeout=3600, cwd=work)
    wall = time.monotonic() - t0
    cpu = children_cpu() - cpu0
    if p.returncode != 0:
        return {"error": p.stderr[-2000:]}
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    res = {
        "what": "one process: import Airflow, DagBag(folder) (safe mode), "
                "DagSerialization.to_dict of every DAG; no database",
        "wall_s": r3(wall),
        "cpu_s": r3(cpu),
        "import_airflow_s": r3(doc["import_airflow_s"]),
        "dagbag_s": r3(doc["dagbag_s"]),
        "serialize_s": r3(doc["serialize_s"]),
        "dags": doc["dags"],
        "import_errors": doc["import_errors"],
        "loadavg_before": load,
    }
    log(f"Airflow DagBag: {doc['dags']} DAGs, {doc['import_errors']} errors in {wall:.2f} s "
        f"(DagBag {doc['dagbag_s']:.2f} s, serialize {doc['serialize_s']:.2f} s)")
    return res


def airflow_processor(python: str, folder: str, work: str, n: int) -> dict:
    """Airflow's own DAG processor on the folder, one pass (`airflow dag-processor -n 1`) into a
    fresh SQLite metadata database, and `airflow dags reserialize` into another."""
    airflow = os.path.join(os.path.dirname(python), "airflow")
    res = {}
    for what, cmd in (("dag_processor", [airflow, "dag-processor", "-n", "1"]),
                      ("reserialize", [airflow, "dags", "reserialize"])):
        home = os.path.join(work, f"airflow-home-{what}")
        os.makedirs(home, exist_ok=True)
        env = dict(os.environ)
        env.update({
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": folder,
        })
        m = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True,
                           timeout=900, cwd=home)
        if m.returncode != 0:
            res[what] = {"error": "airflow db migrate failed: " + m.stderr[-1500:]}
            continue
        load = loadavg()
        cpu0 = children_cpu()
        t0 = time.monotonic()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600, cwd=home)
        wall = time.monotonic() - t0
        cpu = children_cpu() - cpu0
        db = sqlite3.connect(os.path.join(home, "airflow.db"))
        try:
            stored = db.execute("SELECT COUNT(DISTINCT dag_id) FROM serialized_dag").fetchone()[0]
            errors = db.execute("SELECT COUNT(*) FROM import_error").fetchone()[0]
        finally:
            db.close()
        res[what] = {
            "command": " ".join(["airflow"] + cmd[1:]),
            "exit_code": p.returncode,
            "wall_s": r3(wall),
            "cpu_s": r3(cpu),
            "serialized_dags": stored,
            "import_errors": errors,
            "loadavg_before": load,
        }
        if p.returncode != 0:
            res[what]["stderr_tail"] = p.stderr[-1500:]
        log(f"Airflow {res[what]['command']}: {stored} DAGs stored, {errors} import errors in "
            f"{wall:.2f} s ({cpu:.1f} CPU s)")
        if stored != n:
            log(f"WARNING: expected {n} DAGs")
    return res


# --- main ---------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True, help="updraft release binary")
    ap.add_argument("--python", required=True, help="python.executable (Airflow 3.3 environment)")
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=5, help="file changes per interval")
    ap.add_argument("--intervals", nargs="*", default=["10s", "1s"],
                    help="scheduler.dag_dir_list_interval values for the live test "
                         "('10s' is the default)")
    ap.add_argument("--airflow", action="store_true", help="also time Airflow's DagBag")
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--out", default="", help="also write the JSON here")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="updraft-pyparse-")
    folder = os.path.join(work, "dags")
    write_files(folder, args.files)
    log(f"{args.files} DAG files in {folder}; load average {loadavg()}")
    result = {
        "benchmark": "python_dag_parse",
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "loadavg_start": loadavg()},
        "files": args.files,
        "python": args.python,
        "targets": {"cold_parse_s": 30, "changed_file_live_s": 2},
    }
    try:
        if not args.skip_cli:
            result["cold_cli"] = cold_cli(args.binary, folder, args.python, work, args.files)
        result["standalone"] = {}
        for interval in args.intervals:
            # every run starts from the original files
            shutil.rmtree(folder)
            write_files(folder, args.files)
            sa = Standalone(args.binary, work, folder, args.python, interval)
            try:
                entry = {"dag_dir_list_interval": interval, "start": sa.start(args.files)}
                entry["live"] = live_changes(sa, folder, args.files, args.changes, args.seed)
            finally:
                sa.stop()
            result["standalone"][interval] = entry
        if args.airflow:
            shutil.rmtree(folder)
            write_files(folder, args.files)
            result["airflow_dagbag"] = airflow_dagbag(args.python, folder, work)
            result["airflow"] = airflow_processor(args.python, folder, work, args.files)
    finally:
        result["host"]["loadavg_end"] = loadavg()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    # table
    rows = []
    if "cold_cli" in result:
        c = result["cold_cli"]
        rows.append(("cold parse, `updraft dags list` (fresh store)", f"{c['wall_s']} s",
                     f"{c['dags_listed']} DAGs, {c['import_errors']} errors, {c['cpu_s']} CPU s",
                     "≤ 30 s"))
    for iv, e in result.get("standalone", {}).items():
        s, l = e["start"], e["live"]
        rows.append((f"standalone ({iv}): spawn → all DAGs in the API", f"{s['all_dags_listed_s']} s",
                     f"{s['import_errors']} errors", "≤ 30 s"))
        rows.append((f"standalone ({iv}): changed file live", f"median {l['median_s']} s, max {l['max_s']} s",
                     f"{l['changes']} changes; idle rescans {l['idle_rescan_cpu_cores']} cores",
                     "≤ 2 s"))
    if "airflow_dagbag" in result and "wall_s" in result["airflow_dagbag"]:
        a = result["airflow_dagbag"]
        rows.append(("Airflow 3.3.2 DagBag + serialize (1 process)", f"{a['wall_s']} s",
                     f"{a['dags']} DAGs, {a['import_errors']} errors", ""))
    for what, a in result.get("airflow", {}).items():
        if "wall_s" in a:
            rows.append((f"Airflow 3.3.2 `{a['command']}` (SQLite)", f"{a['wall_s']} s",
                         f"{a['serialized_dags']} DAGs, {a['import_errors']} errors, {a['cpu_s']} CPU s",
                         ""))
    w = [max(len(str(r[k])) for r in rows) for k in range(4)] if rows else []
    for r in rows:
        print("  ".join(str(x).ljust(w[k]) for k, x in enumerate(r)), file=sys.stderr)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
