#!/usr/bin/env python3
"""Updraft orchestration benchmarks, the same scenarios as the Airflow peer benchmark
(/work/shared/peers/airflow/bench.py) so the two can be compared side by side.

Standard library only. Run through bench/run.sh, which builds the release binary first.

Per backend (SQLite, then PostgreSQL) it starts `updraft standalone` on a fresh home (and a
fresh PostgreSQL schema), measures start-up and idle memory, then runs chain40, chain10_long,
fan100, fan100_mat100 and runs50; a second fresh instance holds the 10,000-task DAG for the
throughput scenario (so its parse cost does not weigh on the other scenarios). The variant
`sqlite-poll10ms` repeats chain40, fan100 and runs50 on SQLite with a 10 ms inbox poll instead
of the default 50 ms, to show what that poll costs.

Timing: trigger = this driver's time.time() just before `updraft dags trigger` is spawned;
end = dag_run.end_date read from the database (same host clock). Task times come from
task_instance.{queued_dttm,start_date,end_date}. Transition = downstream start_date minus
upstream end_date. CPU = user+sys seconds from /proc (the standalone process, the task
processes it reaped, and for PostgreSQL the postmaster tree). Memory = /proc sampled every
50 ms in a thread (tree RSS) and smaps_rollup for idle RSS/PSS/USS.

The JSON document goes to stdout (and to --out); progress and the comparison table go to stderr.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import glob
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
NCPU = os.cpu_count() or 1
HERE = os.path.dirname(os.path.abspath(__file__))
PEER_DIR = "/work/shared/peers/airflow"

# The targets; each scenario reports which it meets.
TARGETS = {
    "chain40_overhead_s": 0.3,  # total <= sum of task run times + 0.3 s
    "chain40_median_transition_s": 0.005,
    "fan100_wall_s": 1.0,
    "runs50_wall_s": 1.0,
    "start_to_ready_s": 0.3,
    "idle_rss_mb": 30.0,
    "throughput_tasks_per_s": 10000.0,
}


def now() -> float:
    return time.time()


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stats(xs) -> dict:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return {}
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return {
        "n": len(xs),
        "mean": round(statistics.mean(xs), 6),
        "median": round(statistics.median(xs), 6),
        "p95": round(p95, 6),
        "min": round(xs[0], 6),
        "max": round(xs[-1], 6),
    }


def max_overlap(intervals) -> int:
    ev = []
    for s, e in intervals:
        if s is None or e is None:
            continue
        ev.append((s, 1))
        ev.append((e, -1))
    ev.sort(key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def r3(x):
    return None if x is None else round(x, 3)


def r4(x):
    return None if x is None else round(x, 4)


# ----------------------------------------------------------------------------- /proc
def read_stat(pid: int):
    """(ppid, utime+stime s, cutime+cstime s, rss bytes, threads) or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
    except OSError:
        return None
    f = s[s.rindex(b")") + 2 :].split()
    return (
        int(f[1]),
        (int(f[11]) + int(f[12])) / CLK_TCK,
        (int(f[13]) + int(f[14])) / CLK_TCK,
        int(f[21]) * PAGE,
        int(f[17]),
    )


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def tree(root: int) -> dict[int, tuple]:
    """Every live process under root (root included) with its stat."""
    st = {}
    kids: dict[int, list[int]] = {}
    for pid in all_pids():
        s = read_stat(pid)
        if s:
            st[pid] = s
            kids.setdefault(s[0], []).append(pid)
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        if p in st:
            out[p] = st[p]
            todo.extend(kids.get(p, ()))
    return out


def tree_cpu_s(root: int | None) -> float:
    """user+sys of a process tree, reaped descendants included (they are in c{u,s}time)."""
    if not root:
        return 0.0
    return sum(s[1] + s[2] for s in tree(root).values())


def smaps_rollup(pid: int) -> dict:
    out = {"rss_mb": 0.0, "pss_mb": 0.0, "uss_mb": 0.0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if not v.strip().endswith("kB"):
                    continue
                kb = int(v.split()[0])
                if k == "Rss":
                    out["rss_mb"] += kb / 1024
                elif k == "Pss":
                    out["pss_mb"] += kb / 1024
                elif k in ("Private_Clean", "Private_Dirty", "Private_Hugetlb"):
                    out["uss_mb"] += kb / 1024
    except OSError:
        pass
    return out


def host_cpu():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v[:8]), idle  # total (user..steal), idle+iowait


def postmaster_pid() -> int | None:
    for f in glob.glob("/var/lib/postgresql/*/main/postmaster.pid"):
        try:
            with open(f) as fh:
                return int(fh.readline().strip())
        except (OSError, ValueError):
            pass
    return None


class TreeSampler(threading.Thread):
    """Peak RSS / process count of the updraft process tree, sampled every `interval` s."""

    def __init__(self, root: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.halt = threading.Event()
        self.n = 0
        self.peak_tree_rss = 0
        self.peak_root_rss = 0
        self.peak_nproc = 0
        self.peak_threads = 0

    def run(self):
        while not self.halt.is_set():
            t = tree(self.root)
            if t:
                self.n += 1
                self.peak_tree_rss = max(self.peak_tree_rss, sum(s[3] for s in t.values()))
                self.peak_nproc = max(self.peak_nproc, len(t))
                if self.root in t:
                    self.peak_root_rss = max(self.peak_root_rss, t[self.root][3])
                    self.peak_threads = max(self.peak_threads, t[self.root][4])
            self.halt.wait(self.interval)

    def stop(self) -> dict:
        self.halt.set()
        self.join()
        return {
            "samples": self.n,
            "interval_s": self.interval,
            "peak_tree_rss_mb": round(self.peak_tree_rss / 2**20, 1),
            "peak_updraft_rss_mb": round(self.peak_root_rss / 2**20, 1),
            "peak_tree_processes": self.peak_nproc,
            "peak_updraft_threads": self.peak_threads,
        }


# ----------------------------------------------------------------------------- databases
def parse_ts(v):
    if v is None or v == "":
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(v)  # epoch from PostgreSQL
    except ValueError:
        pass
    return dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()


def lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class SqliteDB:
    kind = "sqlite"
    poll = 0.02

    def __init__(self, path: str):
        import sqlite3

        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False)

    def col(self, name: str) -> str:
        return name

    def q(self, sql: str) -> list[tuple]:
        import sqlite3

        for attempt in range(50):
            try:
                return self.conn.execute(sql).fetchall()
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.02)
        return []

    def close(self):
        self.conn.close()


class PsqlDB:
    """A long-lived `psql` co-process: one query per call, no driver dependency."""

    kind = "postgres"
    poll = 0.05
    SEP = "\x1f"

    def __init__(self, url: str, errlog: str):
        self.err = open(errlog, "a")
        self.p = subprocess.Popen(
            ["psql", "-X", "-q", "-A", "-t", "-F", self.SEP, "-v", "ON_ERROR_STOP=0", url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True, bufsize=1,
        )
        self.lock = threading.Lock()

    def col(self, name: str) -> str:
        return f"extract(epoch from {name})"

    def q(self, sql: str) -> list[tuple]:
        with self.lock:
            self.p.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo __END__\n")
            self.p.stdin.flush()
            rows = []
            while True:
                line = self.p.stdout.readline()
                if not line:
                    raise RuntimeError("psql exited")
                line = line.rstrip("\n")
                if line == "__END__":
                    return rows
                if line:
                    rows.append(tuple(None if c == "" else c for c in line.split(self.SEP)))

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(5)
        except Exception:
            self.p.kill()
        self.err.close()


def psql_admin(base_url: str, sql: str) -> str:
    cp = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", base_url, "-c", sql],
                        capture_output=True, text=True)
    if cp.returncode != 0:
        raise RuntimeError(f"psql failed: {cp.stderr.strip()}")
    return cp.stdout.strip()


def wait_runs(db, dag_id: str, run_ids: list[str], timeout: float) -> dict:
    ids = ",".join(lit(r) for r in run_ids)
    sql = (f"select run_id, state, {db.col('start_date')}, {db.col('end_date')}, {db.col('queued_at')} "
           f"from dag_run "
           f"where dag_id = {lit(dag_id)} and run_id in ({ids})")
    deadline = now() + timeout
    while True:
        rows = db.q(sql)
        done = {r[0]: (r[1], parse_ts(r[2]), parse_ts(r[3]), parse_ts(r[4]))
                for r in rows if r[1] in ("success", "failed")}
        if len(done) == len(run_ids):
            return done
        if now() > deadline:
            raise TimeoutError(f"{dag_id}: {len(done)}/{len(run_ids)} runs finished within {timeout}s")
        time.sleep(db.poll)


def fetch_tis(db, dag_id: str, run_ids: list[str]) -> list[dict]:
    ids = ",".join(lit(r) for r in run_ids)
    rows = db.q(
        f"select run_id, task_id, state, {db.col('queued_dttm')}, {db.col('start_date')}, "
        f"{db.col('end_date')}, try_number from task_instance "
        f"where dag_id = {lit(dag_id)} and run_id in ({ids})"
    )
    return [
        {"run_id": r[0], "task_id": r[1], "state": r[2], "queued": parse_ts(r[3]),
         "start": parse_ts(r[4]), "end": parse_ts(r[5]), "try_number": int(r[6])}
        for r in rows
    ]


# ----------------------------------------------------------------------------- DAG files
def dag_yaml(dag_id: str, tasks: list[dict], **extra) -> str:
    """YAML with JSON scalars (JSON is valid YAML 1.2), one flow mapping per task."""
    lines = [f"dag_id: {dag_id}", "schedule: null", "start_date: 2024-01-01", "tags: [bench]"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in extra.items()]
    lines.append("tasks:")
    lines += [f"  - {json.dumps(t)}" for t in tasks]
    return "\n".join(lines) + "\n"


def fibo_cmd(py: str, n: int) -> str:
    return f"{py} -c 'f=lambda n: n if n<2 else f(n-1)+f(n-2); print(f({n}))'"


def chain(n: int, cmd: str) -> list[dict]:
    out = []
    for i in range(n):
        t = {"task_id": f"t{i:02d}", "bash_command": cmd}
        if i:
            t["upstream"] = f"t{i - 1:02d}"
        out.append(t)
    return out


def small_dags(py: str) -> dict[str, str]:
    fan = [{"task_id": f"b{i:03d}", "bash_command": "true"} for i in range(100)]
    return {
        "warmup.yaml": dag_yaml("warmup", [{"task_id": "only", "bash_command": "true"}]),
        "chain40.yaml": dag_yaml("chain40", chain(40, fibo_cmd(py, 10)), max_active_runs=1),
        "chain10_long.yaml": dag_yaml("chain10_long", chain(10, fibo_cmd(py, 33)), max_active_runs=1),
        "fan100.yaml": dag_yaml("fan100", fan),
        "fan100_mat100.yaml": dag_yaml("fan100_mat100", fan, max_active_tasks=100),
        "runs50.yaml": dag_yaml("runs50", [{"task_id": "only", "bash_command": "true"}]),
    }


def throughput_dag(layers: int = 10, width: int = 999) -> str:
    """layers x (width empty tasks + 1 join): layer i depends on join i-1 (10,000 tasks)."""
    tasks = []
    prev_join = None
    for layer in range(layers):
        ids = [f"l{layer}_t{i:03d}" for i in range(width)]
        for tid in ids:
            t = {"task_id": tid, "operator": "empty"}
            if prev_join:
                t["upstream"] = prev_join
            tasks.append(t)
        prev_join = f"join{layer}"
        tasks.append({"task_id": prev_join, "operator": "empty", "upstream": ids})
    return dag_yaml("throughput10k", tasks)


# ----------------------------------------------------------------------------- updraft
class Instance:
    """One `updraft standalone` with its own home (and PostgreSQL schema)."""

    def __init__(self, binary: str, home: str, dags: dict[str, str], backend: str, pg_url: str | None,
                 extra_env: dict[str, str] | None = None):
        self.binary, self.home, self.backend = binary, home, backend
        self.dags_dir = os.path.join(home, "dags")
        os.makedirs(self.dags_dir, exist_ok=True)
        for name, text in dags.items():
            with open(os.path.join(self.dags_dir, name), "w") as f:
                f.write(text)
        self.env = dict(os.environ)
        self.env.update({
            "UPDRAFT_HOME": home,
            "UPDRAFT__CORE__DAGS_FOLDER": self.dags_dir,
            "UPDRAFT__CORE__LOAD_EXAMPLES": "false",
            "UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
        })
        if backend == "postgres":
            self.env["UPDRAFT__DATABASE__URL"] = pg_url
        self.env.update(extra_env or {})
        self.pg_url = pg_url
        self.logfile = os.path.join(home, "standalone.log")
        self.proc: subprocess.Popen | None = None
        self.db = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def open_db(self):
        if self.db is None:
            if self.backend == "sqlite":
                self.db = SqliteDB(os.path.join(self.home, "updraft.db"))
            else:
                self.db = PsqlDB(self.pg_url, os.path.join(self.home, "psql.err"))
        return self.db

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def trigger(self, dag_id: str, run_id: str) -> tuple[float, float]:
        for attempt in range(3):
            t0 = now()
            cp = self.cli("dags", "trigger", dag_id, "-r", run_id)
            t1 = now()
            if cp.returncode == 0:
                return t0, t1
            log(f"trigger {dag_id} {run_id} failed (attempt {attempt + 1}): {cp.stderr.strip()[:300]}")
            time.sleep(0.05)
        raise RuntimeError(f"cannot trigger {dag_id}")

    def log_has(self, needle: str) -> bool:
        try:
            with open(self.logfile, errors="replace") as f:
                return needle in f.read()
        except OSError:
            return False

    def start(self) -> dict:
        """Spawn and time the start-up milestones (seconds after spawn)."""
        logf = open(self.logfile, "ab")
        t0 = now()
        self.proc = subprocess.Popen([self.binary, "standalone"], env=self.env, stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        m: dict = {}
        deadline = t0 + 60
        # 1. the banner is printed once the database is created and migrated
        while not self.log_has("updraft standalone"):
            if self.proc.poll() is not None:
                raise RuntimeError(f"updraft standalone exited with {self.proc.returncode}; see {self.logfile}")
            if now() > deadline:
                raise TimeoutError("no start-up banner within 60 s")
            time.sleep(0.002)
        m["db_migrated_banner_s"] = r4(now() - t0)
        db = self.open_db()
        # 2. the scheduler holds its lease (its loop is about to start)
        pid = str(self.pid)
        while True:
            try:
                rows = db.q("select holder from lease")
            except Exception:
                rows = []
            if any(r[0] and f":{pid}:" in r[0] for r in rows):
                break
            if now() > deadline:
                raise TimeoutError("scheduler lease not taken within 60 s")
            time.sleep(0.002)
        m["scheduler_lease_s"] = r4(now() - t0)
        # 3. the CLI sees the DAGs (`updraft dags list` succeeds and lists warmup)
        while True:
            cp = self.cli("dags", "list", "-o", "json")
            if cp.returncode == 0 and '"warmup"' in cp.stdout:
                break
            if now() > deadline:
                raise TimeoutError("`dags list` did not list warmup within 60 s")
        m["dags_list_ok_s"] = r4(now() - t0)
        m["ready_s"] = max(m["scheduler_lease_s"], m["dags_list_ok_s"])
        # 4. cold start -> first task completed: a one-task DAG triggered right away
        rid = f"warmup_{int(now() * 1e6)}"
        t_trig, _ = self.trigger("warmup", rid)
        runs = wait_runs(db, "warmup", [rid], timeout=60)
        tis = fetch_tis(db, "warmup", [rid])
        m["warmup_triggered_s"] = r4(t_trig - t0)
        m["first_task_completed_s"] = r4(tis[0]["end"] - t0) if tis and tis[0]["end"] else None
        m["warmup_run_done_s"] = r4(runs[rid][2] - t0)
        m["warmup_trigger_to_done_s"] = r4(runs[rid][2] - t_trig)
        m["warmup_state"] = runs[rid][0]
        return m

    def stop(self, timeout: float = 40) -> dict:
        if not self.proc or self.proc.poll() is not None:
            return {"already_exited": True}
        t0 = now()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            res = {"stop_s": r3(now() - t0), "exit_code": self.proc.returncode}
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            res = {"stop_s": r3(now() - t0), "sigkilled": True}
        if self.db:
            self.db.close()
            self.db = None
        return res


class Cpu:
    """CPU seconds of updraft (itself, its reaped task processes), PostgreSQL and this driver."""

    def __init__(self, inst: Instance):
        self.inst = inst
        self.pm = postmaster_pid() if inst.backend == "postgres" else None

    def snap(self) -> dict:
        t = tree(self.inst.pid)
        root = t.get(self.inst.pid)
        own = root[1] if root else 0.0
        kids = (root[2] if root else 0.0) + sum(s[1] + s[2] for p, s in t.items() if p != self.inst.pid)
        drv = os.times()
        return {"t": now(), "own": own, "kids": kids, "pg": tree_cpu_s(self.pm),
                "driver": drv.user + drv.system + drv.children_user + drv.children_system,
                "host": host_cpu()}

    @staticmethod
    def report(a: dict, b: dict, n_tasks: int | None = None) -> dict:
        wall = b["t"] - a["t"]
        own, kids, pg, drv = (b[k] - a[k] for k in ("own", "kids", "pg", "driver"))
        tot, idle = b["host"][0] - a["host"][0], b["host"][1] - a["host"][1]
        busy = (1 - idle / tot) if tot else 0.0
        out = {
            "wall_s": r3(wall),
            "updraft_cpu_s": r3(own),
            "task_processes_cpu_s": r3(kids),
            "postgres_cpu_s": r3(pg),
            "driver_and_cli_cpu_s": r3(drv),
            "host_busy_cores": r3(busy * NCPU),
            # other tenants of this shared host: everything not ours
            "foreign_cores_avg": r3(busy * NCPU - (own + kids + pg + drv) / wall) if wall > 0 else None,
        }
        if n_tasks:
            out["updraft_plus_db_cpu_s_per_task"] = round((own + kids + pg) / n_tasks, 5)
        return out


def wait_quiet(inst: Instance, max_foreign: float, max_wait: float) -> dict:
    """Wait until other tenants use <= max_foreign cores over a 1 s window (at most max_wait s)."""
    cpu = Cpu(inst)
    t0 = now()
    while True:
        a = cpu.snap()
        time.sleep(1.0)
        f = Cpu.report(a, cpu.snap())["foreign_cores_avg"] or 0.0
        if f <= max_foreign or now() - t0 >= max_wait:
            return {"waited_s": r3(now() - t0), "foreign_cores_at_start": f, "gave_up": f > max_foreign}


# ----------------------------------------------------------------------------- scenarios
def single_run(inst: Instance, dag_id: str, is_chain: bool, timeout: float) -> dict:
    db = inst.open_db()
    run_id = f"bench_{dag_id}_{int(now() * 1e6)}"
    cpu = Cpu(inst)
    sampler = TreeSampler(inst.pid)
    sampler.start()
    c0 = cpu.snap()
    t_trig, t_cli = inst.trigger(dag_id, run_id)
    runs = wait_runs(db, dag_id, [run_id], timeout)
    t_seen = now()
    c1 = cpu.snap()
    mem = sampler.stop()
    state, r_start, r_end, r_queued = runs[run_id]
    tis = fetch_tis(db, dag_id, [run_id])
    n = len(tis)
    wall = r_end - t_trig
    starts = [t["start"] for t in tis if t["start"]]
    ends = [t["end"] for t in tis if t["end"]]
    res = {
        "dag_id": dag_id,
        "run_id": run_id,
        "state": state,
        "n_tasks": n,
        "tasks_success": sum(1 for t in tis if t["state"] == "success"),
        "wall_s": r4(wall),
        "observed_by_driver_s": r4(t_seen - t_trig),
        "trigger_cli_s": r4(t_cli - t_trig),
        # the CLI inserts the run (queued_at); from there on it is the scheduler's work
        "trigger_to_run_created_s": r4(r_queued - t_trig) if r_queued else None,
        "run_created_to_end_s": r4(r_end - r_queued) if r_queued else None,
        # the CLI has committed the run and its task instances: the rest is the scheduler
        "trigger_returned_to_end_s": r4(r_end - t_cli),
        "trigger_to_run_start_s": r4(r_start - t_trig) if r_start else None,
        "trigger_to_first_task_start_s": r4(min(starts) - t_trig) if starts else None,
        "last_task_end_to_run_end_s": r4(r_end - max(ends)) if ends else None,
        "tasks_per_s": round(n / wall, 2) if wall > 0 else None,
        "tasks_per_s_after_trigger_returned": round(n / (r_end - t_cli), 2) if r_end > t_cli else None,
        "task_duration_s": stats([t["end"] - t["start"] for t in tis if t["start"] and t["end"]]),
        "sum_task_durations_s": r4(sum(t["end"] - t["start"] for t in tis if t["start"] and t["end"])),
        "max_concurrent_tasks": max_overlap([(t["start"], t["end"]) for t in tis]),
        "cpu": Cpu.report(c0, c1, n),
        "memory": mem,
    }
    if is_chain:
        tis.sort(key=lambda t: t["task_id"])
        pairs = list(zip(tis, tis[1:]))
        res["transition_s"] = stats([c["start"] - p["end"] for p, c in pairs])
        res["transition_breakdown_mean_s"] = {
            "upstream_end_to_queued": r4(statistics.mean(c["queued"] - p["end"] for p, c in pairs)),
            "queued_to_start": r4(statistics.mean(c["start"] - c["queued"] for p, c in pairs)),
        }
        res["overhead_s"] = r4(wall - res["sum_task_durations_s"])
        res["overhead_share"] = r4(res["overhead_s"] / wall)
    else:
        res["first_start_to_last_end_s"] = r4(max(ends) - min(starts)) if starts else None
        res["queued_to_start_s"] = stats([t["start"] - t["queued"] for t in tis if t["queued"] and t["start"]])
    return res


def many_runs(inst: Instance, dag_id: str, n_runs: int, concurrency: int, timeout: float) -> dict:
    db = inst.open_db()
    base = f"bench_{dag_id}_{int(now() * 1e6)}"
    run_ids = [f"{base}_{i:03d}" for i in range(n_runs)]
    cpu = Cpu(inst)
    sampler = TreeSampler(inst.pid)
    sampler.start()
    c0 = cpu.snap()
    t_first = now()
    with cf.ThreadPoolExecutor(concurrency) as ex:
        trig = dict(zip(run_ids, ex.map(lambda r: inst.trigger(dag_id, r), run_ids)))
    t_all = now()
    runs = wait_runs(db, dag_id, run_ids, timeout)
    t_seen = now()
    c1 = cpu.snap()
    mem = sampler.stop()
    tis = fetch_tis(db, dag_id, run_ids)
    wall = max(r[2] for r in runs.values()) - t_first
    return {
        "dag_id": dag_id,
        "n_runs": n_runs,
        "runs_success": sum(1 for r in runs.values() if r[0] == "success"),
        "trigger_concurrency": concurrency,
        "trigger_phase_s": r4(t_all - t_first),
        "trigger_cli_s": stats([b - a for a, b in trig.values()]),
        "wall_s": r4(wall),
        "observed_by_driver_s": r4(t_seen - t_first),
        "runs_per_s": round(n_runs / wall, 2),
        "tasks_per_s": round(len(tis) / wall, 2),
        "per_run_trigger_to_end_s": stats([runs[r][2] - trig[r][0] for r in run_ids]),
        "per_run_trigger_to_task_start_s": stats([t["start"] - trig[t["run_id"]][0] for t in tis if t["start"]]),
        "task_duration_s": stats([t["end"] - t["start"] for t in tis if t["start"] and t["end"]]),
        "max_concurrent_tasks": max_overlap([(t["start"], t["end"]) for t in tis]),
        "max_concurrent_runs": max_overlap([(r[1], r[2]) for r in runs.values()]),
        "cpu": Cpu.report(c0, c1, len(tis)),
        "memory": mem,
    }


def idle(inst: Instance, settle: float) -> dict:
    cpu = Cpu(inst)
    a = cpu.snap()
    time.sleep(settle)
    rep = Cpu.report(a, cpu.snap())
    t = tree(inst.pid)
    root = smaps_rollup(inst.pid)
    total = {"rss_mb": 0.0, "pss_mb": 0.0, "uss_mb": 0.0}
    for pid in t:
        for k, v in smaps_rollup(pid).items():
            total[k] += v
    st = read_stat(inst.pid)
    return {
        "settle_s": settle,
        "updraft": {k: round(v, 1) for k, v in root.items()},
        "tree": {k: round(v, 1) for k, v in total.items()},
        "processes": len(t),
        "threads": st[4] if st else None,
        "idle_cpu_cores": r4((rep["updraft_cpu_s"] + rep["task_processes_cpu_s"]) / rep["wall_s"]),
        "idle_updraft_cpu_s": rep["updraft_cpu_s"],
        "idle_postgres_cpu_s": rep["postgres_cpu_s"],
    }


def targets_for(name: str, r: dict) -> dict:
    t = {}
    if name == "chain40":
        t["overhead_le_0.3s"] = r["overhead_s"] <= TARGETS["chain40_overhead_s"]
        t["median_transition_le_5ms"] = r["transition_s"]["median"] <= TARGETS["chain40_median_transition_s"]
    elif name == "fan100":
        t["wall_le_1s"] = r["wall_s"] <= TARGETS["fan100_wall_s"]
    elif name == "runs50":
        t["wall_le_1s"] = r["wall_s"] <= TARGETS["runs50_wall_s"]
    elif name == "throughput":
        t["ge_10000_tasks_per_s"] = r["tasks_per_s"] >= TARGETS["throughput_tasks_per_s"]
    elif name == "startup":
        t["ready_le_0.3s"] = r["ready_s"] <= TARGETS["start_to_ready_s"]
        t["idle_rss_le_30MB"] = r["idle"]["updraft"]["rss_mb"] <= TARGETS["idle_rss_mb"]
    return t


# ----------------------------------------------------------------------------- driver
class Bench:
    def __init__(self, args):
        self.args = args
        self.py = os.path.realpath(sys.executable)
        self.results: list[dict] = []
        self.workdir = tempfile.mkdtemp(prefix="updraft-bench-")

    def emit(self, backend: str, name: str, res: dict, gate: dict | None = None):
        obj = {"scenario": name, "backend": backend, **res}
        if gate:
            obj["quiet_gate"] = gate
        t = targets_for(name, res)
        if t:
            obj["targets_met"] = t
        self.results.append(obj)
        log(f"{backend}/{name}: " + summary_line(obj))

    def new_instance(self, backend: str, label: str, dags: dict, extra_env=None) -> Instance:
        home = os.path.join(self.workdir, f"{backend}-{label}")
        pg_url = None
        if backend == "postgres":
            schema = f"updraft_bench_{label}_{os.getpid()}"
            psql_admin(self.args.pg_url, f"drop schema if exists {schema} cascade; create schema {schema}")
            self.schemas.append(schema)
            sep = "&" if "?" in self.args.pg_url else "?"
            pg_url = f"{self.args.pg_url}{sep}options=-c%20search_path%3D{schema}"
        return Instance(self.args.binary, home, dags, backend, pg_url, extra_env)

    def gate(self, inst: Instance) -> dict:
        return wait_quiet(inst, self.args.max_foreign, self.args.max_quiet_wait)

    def run_backend(self, label: str):
        """`label` is a backend, or a variant `sqlite-poll10ms` (SQLite with a 10 ms inbox poll)."""
        a = self.args
        want = set(a.only)
        backend, extra = label, None
        if label == "sqlite-poll10ms":
            backend, extra = "sqlite", {"UPDRAFT__SCHEDULER__INBOX_POLL_INTERVAL": "10ms"}
            want &= {"chain40", "fan100", "runs50"}
        inst = self.new_instance(backend, "poll10ms" if extra else "main", small_dags(self.py), extra)
        backend = label
        try:
            log(f"{backend}: starting updraft standalone (fresh home {inst.home})")
            st = inst.start()
            st["idle"] = idle(inst, a.idle_settle)
            self.emit(backend, "startup", st)
            plan = [("chain40", "chain40", True), ("chain10_long", "chain10_long", True),
                    ("fan100", "fan100", False), ("fan100_mat100", "fan100_mat100", False)]
            for name, dag_id, is_chain in plan:
                if name not in want:
                    continue
                g = self.gate(inst)
                self.emit(backend, name, single_run(inst, dag_id, is_chain, a.timeout), g)
                time.sleep(a.gap)
            if "runs50" in want:
                g = self.gate(inst)
                self.emit(backend, "runs50", many_runs(inst, "runs50", 50, 16, a.timeout), g)
        finally:
            stop = inst.stop()
            log(f"{backend}: stopped {stop}")
        if "throughput" in want and not extra:
            dags = {"warmup.yaml": small_dags(self.py)["warmup.yaml"], "throughput10k.yaml": throughput_dag()}
            inst = self.new_instance(backend, "tput", dags)
            try:
                log(f"{backend}: starting a second instance with the 10,000-task DAG")
                st = inst.start()
                g = self.gate(inst)
                res = single_run(inst, "throughput10k", False, a.timeout)
                res["startup_with_10k_task_dag"] = st
                self.emit(backend, "throughput", res, g)
            finally:
                log(f"{backend}: stopped {inst.stop()}")

    def run(self) -> dict:
        self.schemas: list[str] = []
        meta = self.meta()
        try:
            for backend in self.args.backends:
                if backend == "postgres" and not self.pg_ok():
                    log(f"postgres: not reachable at {self.args.pg_url}; skipped")
                    meta["skipped"] = meta.get("skipped", []) + ["postgres"]
                    continue
                self.run_backend(backend)
        finally:
            for s in self.schemas:
                if not self.args.keep:
                    try:
                        psql_admin(self.args.pg_url, f"drop schema if exists {s} cascade")
                    except RuntimeError as e:
                        log(f"cannot drop schema {s}: {e}")
            if not self.args.keep:
                shutil.rmtree(self.workdir, ignore_errors=True)
        meta["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        meta["bench_wall_s"] = r3(now() - self.t_start)
        doc = {"meta": meta, "scenarios": self.results}
        peer_path = self.args.peer_results
        if peer_path and os.path.exists(peer_path):
            doc["comparison"] = compare(self.results, json.load(open(peer_path)), peer_path)
        return doc

    def pg_ok(self) -> bool:
        try:
            psql_admin(self.args.pg_url, "select 1")
            return True
        except (RuntimeError, FileNotFoundError):
            return False

    def meta(self) -> dict:
        self.t_start = now()
        try:
            commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", HERE, "status", "--porcelain", "--", "../crates"],
                                   capture_output=True, text=True).stdout.strip() != ""
        except OSError:
            commit, dirty = None, None
        cpu_model = None
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        m = {
            "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "host": {"nproc": NCPU, "cpu": cpu_model, "kernel": platform.release(),
                     "loadavg_at_start": os.getloadavg()},
            "updraft": {"binary": self.args.binary, "git_commit": commit, "crates_dirty": dirty,
                        "version": subprocess.run([self.args.binary, "version"], capture_output=True,
                                                  text=True).stdout.strip()},
            "python_for_tasks": self.py,
            "python": platform.python_version(),
            "config": "defaults (parallelism 32, max_active_tasks_per_dag 16, max_active_runs_per_dag 16, "
                      "inbox_poll_interval 50ms) + load_examples=false, dags_are_paused_at_creation=false",
            "timing_method": "trigger = driver time.time() before spawning `updraft dags trigger`; "
                             "end = dag_run.end_date; task times = task_instance rows (same host clock)",
            "targets": TARGETS,
        }
        if "postgres" in self.args.backends and self.pg_ok():
            m["postgresql"] = psql_admin(self.args.pg_url, "show server_version")
        return m


def summary_line(o: dict) -> str:
    s = o["scenario"]
    if s == "startup":
        i = o["idle"]
        return (f"ready {o['ready_s']}s (banner {o['db_migrated_banner_s']}s, lease {o['scheduler_lease_s']}s, "
                f"dags list {o['dags_list_ok_s']}s), first task done {o['first_task_completed_s']}s; "
                f"idle RSS {i['updraft']['rss_mb']} MB USS {i['updraft']['uss_mb']} MB, "
                f"{i['processes']} process(es), {i['threads']} threads")
    parts = [f"wall {o['wall_s']}s", f"tasks/s {o['tasks_per_s']}"]
    if "transition_s" in o:
        parts.append(f"transition median {o['transition_s']['median'] * 1000:.1f} ms "
                     f"mean {o['transition_s']['mean'] * 1000:.1f} ms")
        parts.append(f"overhead {o['overhead_s']}s over {o['sum_task_durations_s']}s of tasks")
    parts.append(f"peak tree RSS {o['memory']['peak_tree_rss_mb']} MB")
    parts.append(f"updraft CPU {o['cpu']['updraft_cpu_s']}s (+tasks {o['cpu']['task_processes_cpu_s']}s"
                 f", pg {o['cpu']['postgres_cpu_s']}s)")
    parts.append(f"foreign load {o['cpu']['foreign_cores_avg']} cores")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- comparison
def compare(results: list[dict], peer: dict, peer_path: str) -> dict:
    """Side by side with the stored Airflow run: mean over its rounds; ratio = Airflow / Updraft."""
    rounds = peer.get("rounds", [])

    def pmean(path):
        vals = []
        for r in rounds:
            v = r
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            if isinstance(v, (int, float)):
                vals.append(v)
        return statistics.mean(vals) if vals else None

    def ours(backend, scen, path):
        for o in results:
            if o["backend"] == backend and o["scenario"] == scen:
                v = o
                for k in path:
                    v = v.get(k) if isinstance(v, dict) else None
                return v
        return None

    rows = []
    spec = [
        ("chain40 wall s", ("benchmarks", "chain40", "total_wall_s"), "chain40", ("wall_s",)),
        ("chain40 transition median s", ("benchmarks", "chain40", "transition_latency_s", "median"),
         "chain40", ("transition_s", "median")),
        ("chain40 transition mean s", ("benchmarks", "chain40", "transition_latency_s", "mean"),
         "chain40", ("transition_s", "mean")),
        ("chain40 CPU s/task (incl. DB)", ("benchmarks", "chain40", "cpu", "airflow_plus_pg_cpu_s_per_task"),
         "chain40", ("cpu", "updraft_plus_db_cpu_s_per_task")),
        ("chain10_long wall s", ("benchmarks", "chain10_long", "total_wall_s"), "chain10_long", ("wall_s",)),
        ("chain10_long transition median s", ("benchmarks", "chain10_long", "transition_latency_s", "median"),
         "chain10_long", ("transition_s", "median")),
        ("fan100 wall s", ("benchmarks", "fan100", "total_wall_s"), "fan100", ("wall_s",)),
        ("fan100 CPU s/task (incl. DB)", ("benchmarks", "fan100", "cpu", "airflow_plus_pg_cpu_s_per_task"),
         "fan100", ("cpu", "updraft_plus_db_cpu_s_per_task")),
        ("fan100 peak RSS MB (process tree)", ("benchmarks", "fan100_memsampled", "memory_during_run",
                                              "total_rss_mb_max"), "fan100", ("memory", "peak_tree_rss_mb")),
        ("runs50 wall s", ("benchmarks", "runs50", "total_wall_s"), "runs50", ("wall_s",)),
        ("start to ready s", ("startup", "ready_all_s"), "startup", ("ready_s",)),
        ("start to first task completed s", ("startup", "first_task_completed_s"), "startup",
         ("first_task_completed_s",)),
        ("idle RSS MB", ("idle_memory", "total_rss_mb_mean"), "startup", ("idle", "tree", "rss_mb")),
        ("idle USS MB", ("idle_memory", "total_uss_mb_mean"), "startup", ("idle", "tree", "uss_mb")),
        ("idle processes", ("idle_memory", "total_nproc_mean"), "startup", ("idle", "processes")),
        ("idle CPU cores", ("idle_cpu", "airflow_cores_used_avg"), "startup", ("idle", "idle_cpu_cores")),
    ]
    backends = [b for b in ("sqlite", "postgres") if any(o["backend"] == b for o in results)]
    for label, ppath, scen, opath in spec:
        a = pmean(ppath)
        row = {"metric": label, "airflow": None if a is None else round(a, 4)}
        for b in backends:
            u = ours(b, scen, opath)
            row[f"updraft_{b}"] = u
            row[f"ratio_{b}"] = round(a / u, 1) if a is not None and u else None
        rows.append(row)
    for label, path in (("throughput tasks/s, trigger to end (10,000 empty tasks)", ("tasks_per_s",)),
                        ("throughput tasks/s, trigger CLI returned to end", ("tasks_per_s_after_trigger_returned",))):
        row = {"metric": label, "airflow": None}
        for b in backends:
            row[f"updraft_{b}"] = ours(b, "throughput", path)
            row[f"ratio_{b}"] = None
        rows.append(row)
    return {
        "peer": f"stored Apache Airflow {peer.get('meta', {}).get('versions', {}).get('apache-airflow')} run "
                f"({len(rounds)} rounds, {peer.get('meta', {}).get('date_utc')}, LocalExecutor + PostgreSQL) "
                f"from {peer_path}; values are the mean over its rounds",
        "ratio": "Airflow / Updraft (higher = Updraft better; for tasks/s it would be inverted, none shown)",
        "rows": rows,
    }


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def print_comparison(cmp: dict) -> None:
    rows = cmp["rows"]
    backends = [k.split("_", 1)[1] for k in rows[0] if k.startswith("updraft_")]
    cols = ["metric", "airflow"] + [c for b in backends for c in (f"updraft_{b}", f"ratio_{b}")]
    out = [f"Comparison with the {cmp['peer']}", f"ratio = {cmp['ratio']}", ""]
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "---|" * len(cols))
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    print("\n".join(out), file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(HERE, "..", "target", "release", "updraft"))
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgres", "sqlite-poll10ms"],
                    choices=["sqlite", "postgres", "sqlite-poll10ms"],
                    help="sqlite-poll10ms: chain40, fan100 and runs50 on SQLite with a 10 ms inbox poll "
                         "instead of the default 50 ms, to show what the poll costs")
    ap.add_argument("--only", nargs="+",
                    default=["chain40", "chain10_long", "fan100", "fan100_mat100", "runs50", "throughput"])
    ap.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/test",
                    help="server/database for the PostgreSQL runs; a fresh schema is made per instance")
    ap.add_argument("--idle-settle", type=float, default=5.0)
    ap.add_argument("--gap", type=float, default=1.0, help="pause between scenarios")
    ap.add_argument("--timeout", type=float, default=300.0, help="per scenario")
    ap.add_argument("--max-foreign", type=float, default=0.5,
                    help="before each scenario wait until other tenants use <= this many cores ...")
    ap.add_argument("--max-quiet-wait", type=float, default=5.0, help="... but at most this many seconds")
    ap.add_argument("--peer-results", default=os.path.join(PEER_DIR, "results.json"))
    ap.add_argument("--out", default=os.path.join(HERE, "last-run.json"), help="also write the JSON here ('' = no)")
    ap.add_argument("--keep", action="store_true", help="keep the homes and PostgreSQL schemas")
    args = ap.parse_args()
    args.binary = os.path.abspath(args.binary)

    doc = Bench(args).run()
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
        log(f"wrote {args.out}")
    if "comparison" in doc:
        print_comparison(doc["comparison"])


if __name__ == "__main__":
    main()
