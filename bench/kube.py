#!/usr/bin/env python3
"""Kubernetes executor benchmark against the test kube-apiserver (scripts/kube-apiserver.sh).

Runs `updraft standalone` with `core.executor = "kubernetes"` and measures:

- creation: a DAG of --tasks independent tasks is triggered; time until all its pods exist
  (listed by the apiserver), from just before `dags trigger` and from the first pod seen. No
  kubelet runs these pods: they stay Pending (the Pending timeouts are set far away).
- chain latency: a chain of --chain tasks whose pods a simulated kubelet (this script) runs:
  it sees each pod through a watch, patches it Running, runs its command (`updraft task
  execute` with the pod's environment) as a local process, then patches it Succeeded. For each
  link it prints the time from the worker's report of success (the timestamp of its
  `reported the try as success` log line) to the downstream pod's ADDED event, and from the
  upstream pod's Succeeded patch to that event (negative when the report created the
  downstream pod before the kubelet said Succeeded, which is the normal order).

Prints one JSON document (stdout); progress on stderr. Standard library only.
"""

import argparse
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import http.client


def log(*a):
    print("[kube-bench]", *a, file=sys.stderr, flush=True)


class Api:
    """The few apiserver calls of the benchmark (token auth, the test server's self-signed TLS)."""

    def __init__(self, kubeconfig):
        text = open(kubeconfig).read()
        self.server = re.search(r"server:\s*(\S+)", text).group(1)
        self.token = re.search(r"token:\s*(\S+)", text).group(1)
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        u = urllib.parse.urlparse(self.server)
        self.host, self.port = u.hostname, u.port or 443

    def conn(self, timeout=30):
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def call(self, method, path, body=None, ctype="application/json"):
        c = self.conn()
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = ctype
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        out = r.read()
        c.close()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {out[:300]!r}")
        return json.loads(out) if out else None

    def watch(self, path):
        """Yields watch events (dicts) until the connection ends."""
        c = self.conn(timeout=600)
        c.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        r = c.getresponse()
        while True:
            line = r.readline()
            if not line:
                return
            yield json.loads(line)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--updraft", required=True)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--chain", type=int, default=30)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    api = Api(args.kubeconfig)
    ns = f"bench-{int(time.time())}"
    api.call("POST", "/api/v1/namespaces",
             {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    home = tempfile.mkdtemp(prefix="kube-bench-")
    os.makedirs(f"{home}/dags")
    with open(f"{home}/dags/fan.yaml", "w") as f:
        f.write("dag_id: kube_fan\nschedule: null\nmax_active_tasks: 100000\ntasks:\n")
        for i in range(args.tasks):
            f.write(f"  - task_id: t{i:04d}\n    bash_command: 'true'\n")
    with open(f"{home}/dags/chain.yaml", "w") as f:
        f.write("dag_id: kube_chain\nschedule: null\ntasks:\n")
        for i in range(args.chain):
            f.write(f"  - task_id: c{i:03d}\n    bash_command: 'echo {i}'\n")
            if i:
                f.write(f"    upstream: [c{i - 1:03d}]\n")
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": home,
        "UPDRAFT_HOME": home,
        "UPDRAFT__CORE__EXECUTOR": "kubernetes",
        "UPDRAFT__CORE__LOAD_EXAMPLES": "false",
        "UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
        "UPDRAFT__CORE__PARALLELISM": str(args.tasks + args.chain + 10),
        "UPDRAFT__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(args.tasks + 10),
        "UPDRAFT__SCHEDULER__DAG_DIR_LIST_INTERVAL": "1s",
        "UPDRAFT__LOGGING__LEVEL": "warn",
        "UPDRAFT__API__PORT": str(port),
        "UPDRAFT__KUBERNETES__IN_CLUSTER": "false",
        "UPDRAFT__KUBERNETES__CONFIG_FILE": args.kubeconfig,
        "UPDRAFT__KUBERNETES__NAMESPACE": ns,
        "UPDRAFT__KUBERNETES__WORKER_IMAGE": "updraft:bench",
        "UPDRAFT__KUBERNETES__INSTANCE": ns,
        "UPDRAFT__KUBERNETES__WORKER_PODS_PENDING_TIMEOUT": "1h",
    }
    sa_log = open(f"{home}/standalone.log", "w")
    sa = subprocess.Popen([args.updraft, "standalone"], env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=sa_log)

    def cli(*a):
        return subprocess.run([args.updraft, *a], env=env, capture_output=True, text=True)

    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            out = cli("dags", "list", "-o", "json")
            if out.returncode == 0:
                ids = {d["dag_id"] for d in json.loads(out.stdout)}
                if {"kube_fan", "kube_chain"} <= ids:
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError("the DAGs were not parsed")
        # Airflow's default pool has 128 slots
        out = cli("pools", "set", "default_pool", "-1", "unlimited for the benchmark")
        if out.returncode != 0:
            raise RuntimeError(f"pools set: {out.stderr}")
        time.sleep(1)

        # ---- chain latency, with the simulated kubelet ---------------------------------
        added = {}       # task_id -> wall time of ADDED
        succeeded = {}   # task_id -> wall time of the Succeeded patch
        workers = []

        def kubelet():
            path = (f"/api/v1/namespaces/{ns}/pods?watch=1&labelSelector=dag_id%3Dkube_chain")
            for ev in api.watch(path):
                if ev["type"] != "ADDED":
                    continue
                now = time.time()
                pod = ev["object"]
                task = pod["metadata"]["annotations"]["updraft.apache.org/task_id"]
                if task in added:
                    continue
                added[task] = now
                threading.Thread(target=run_pod, args=(pod, task), daemon=True).start()

        def run_pod(pod, task):
            name = pod["metadata"]["name"]
            spath = f"/api/v1/namespaces/{ns}/pods/{name}/status"
            cs = lambda state: [{"name": "base", "image": "updraft:bench", "imageID": "",
                                 "ready": False, "restartCount": 0, "state": state}]
            api.call("PATCH", spath, {"status": {"phase": "Running", "containerStatuses": cs(
                {"running": {"startedAt": "2026-01-01T00:00:00Z"}})}},
                "application/merge-patch+json")
            base = [c for c in pod["spec"]["containers"] if c["name"] == "base"][0]
            wenv = {"PATH": env["PATH"], "HOME": home, "UPDRAFT_HOME": home}
            for e in base.get("env", []):
                if "value" in e:
                    wenv[e["name"]] = e["value"]
            code = subprocess.run([args.updraft, "task", "execute"], env=wenv,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL).returncode
            workers.append(task)
            phase = "Succeeded" if code == 0 else "Failed"
            api.call("PATCH", spath, {"status": {"phase": phase, "containerStatuses": cs(
                {"terminated": {"exitCode": code, "reason": "Completed",
                                "startedAt": "2026-01-01T00:00:00Z",
                                "finishedAt": "2026-01-01T00:00:01Z"}})}},
                "application/merge-patch+json")
            succeeded[task] = time.time()

        threading.Thread(target=kubelet, daemon=True).start()
        time.sleep(0.5)
        run_id = cli("dags", "trigger", "kube_chain").stdout.strip()
        log(f"chain of {args.chain} triggered: {run_id}")
        last = f"c{args.chain - 1:03d}"
        deadline = time.time() + 60 + args.chain * 5
        while last not in succeeded and time.time() < deadline:
            time.sleep(0.1)
        if last not in succeeded:
            raise RuntimeError(f"the chain did not finish; ran {sorted(succeeded)}")

        def reported_at(task):
            p = (f"{home}/logs/dag_id=kube_chain/run_id={run_id}/task_id={task}/attempt=1.log")
            for line in open(p):
                rec = json.loads(line)
                if rec.get("event") == "reported the try as success":
                    ts = rec["timestamp"]
                    return time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) \
                        - time.timezone + float("0" + ts[19:-1])
            return None

        report_to_pod, succeeded_to_pod = [], []
        for i in range(1, args.chain):
            up, down = f"c{i - 1:03d}", f"c{i:03d}"
            r = reported_at(up)
            if r is not None:
                report_to_pod.append((added[down] - r) * 1000)
            succeeded_to_pod.append((added[down] - succeeded[up]) * 1000)

        # ---- creation of many pods ------------------------------------------------------
        t0 = time.time()
        cli("dags", "trigger", "kube_fan")
        t_trig = time.time()
        first = None
        count = 0
        deadline = t0 + 300
        sel = "labelSelector=dag_id%3Dkube_fan"
        while time.time() < deadline:
            items = api.call("GET", f"/api/v1/namespaces/{ns}/pods?{sel}")["items"]
            count = len(items)
            if count and first is None:
                first = time.time()
            if count >= args.tasks:
                break
            time.sleep(0.05)
        t_all = time.time()
        if count < args.tasks:
            raise RuntimeError(f"only {count} of {args.tasks} pods were created")

        med = lambda xs: round(statistics.median(xs), 1)
        result = {
            "apiserver": "kube-apiserver v1.20.2 + etcd on 127.0.0.1 (scripts/kube-apiserver.sh)",
            "updraft": args.updraft,
            "creation": {
                "pods": args.tasks,
                "seconds_from_trigger": round(t_all - t0, 2),
                "seconds_trigger_command": round(t_trig - t0, 2),
                "seconds_first_to_last_pod": round(t_all - first, 2),
                "target_seconds": 10,
            },
            "chain": {
                "links": len(succeeded_to_pod),
                "report_to_downstream_pod_ms": {
                    "median": med(report_to_pod), "max": round(max(report_to_pod), 1)},
                "succeeded_to_downstream_pod_ms": {
                    "median": med(succeeded_to_pod), "max": round(max(succeeded_to_pod), 1)},
                "target_median_ms": 50,
                "workers_run": len(workers),
            },
        }
        print(json.dumps(result, indent=2))
    finally:
        sa.terminate()
        try:
            sa.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sa.kill()
        try:
            api.call("DELETE", f"/api/v1/namespaces/{ns}")
        except Exception as e:  # noqa: BLE001 - best effort clean-up
            log(f"cannot delete namespace {ns}: {e}")
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            log(f"kept {home}")


if __name__ == "__main__":
    import urllib.parse  # noqa: F401 - used by Api
    main()
