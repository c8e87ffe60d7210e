"""Parses Python DAG files for Updraft with the user's Airflow installation.

Usage: python parse_dags.py DAGS_FOLDER TIMEOUT_SECONDS MEMORY_LIMIT_MB OUTPUT_CAP_BYTES
Reads file paths (relative to DAGS_FOLDER), one per line, on stdin. Prints one JSON object per
file on stdout, in order: {"file", "dags": [serialized DAG dicts], "errors": [{"message",
"traceback", "line"}], "output": captured prints (truncated)}.

Airflow is imported once; each file is imported in a forked child, so one file cannot affect
another: the child gets an address-space limit, its stdout/stderr go to a size-capped file, it is
killed (with its process group) when it runs past the timeout, and whatever it does at import
(sys.exit, os._exit, a crash) becomes an import error of that file.
"""

import json
import os
import re
import resource
import signal
import sys
import tempfile
import time
import traceback

LINE_RE = re.compile(r'File "([^"]*)", line (\d+)')


def error(message, tb="", line=None):
    return {"message": message, "traceback": tb, "line": line}


def line_of(tb, path):
    """The last line of the traceback that points into the DAG file itself."""
    line = None
    for m in LINE_RE.finditer(tb or ""):
        if os.path.abspath(m.group(1)) == path:
            line = int(m.group(2))
    return line


def first_line(text):
    for ln in reversed((text or "").strip().splitlines()):
        if ln.strip() and not ln.startswith(" "):
            return ln.strip()
    return (text or "").strip()[:500]


def parse_in_child(folder, rel, result_path, timeout, memory_mb, output_cap):
    """Runs in the forked child; never returns."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    code = 0
    try:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        out = tempfile.TemporaryFile()
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (output_cap, hard))
        result = {"dags": [], "errors": []}
        path = os.path.abspath(os.path.join(folder, rel))
        try:
            from airflow.dag_processing.dagbag import DagBag
            from airflow.serialization.serialized_objects import DagSerialization

            bag = DagBag(dag_folder=path, bundle_path=folder, safe_mode=True, load_op_links=False)
            for key, tb in bag.import_errors.items():
                message = first_line(tb)
                if "[Errno 27] File too large" in tb:
                    message = f"the file wrote more than {output_cap} bytes to stdout/stderr at import"
                result["errors"].append(error(message, tb, line_of(tb, path)))
            for dag in bag.dags.values():
                try:
                    result["dags"].append(DagSerialization.to_dict(dag))
                except Exception as e:
                    tb = traceback.format_exc()
                    result["errors"].append(
                        error(f"cannot serialize DAG {dag.dag_id!r}: {type(e).__name__}: {e}", tb)
                    )
        except SystemExit as e:
            tb = traceback.format_exc()
            result = {"dags": [], "errors": [error(f"the file called sys.exit({e.code!r}) at import", tb, line_of(tb, path))]}
        except MemoryError:
            tb = traceback.format_exc()
            result = {"dags": [], "errors": [error(f"the file exceeded the parser memory limit ({memory_mb} MiB) at import", tb, line_of(tb, path))]}
        except BaseException as e:
            tb = traceback.format_exc()
            result = {"dags": [], "errors": [error(f"{type(e).__name__}: {e}", tb, line_of(tb, path))]}
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        for e in result["errors"]:
            if "[Errno 27] File too large" in (e["message"] + e["traceback"]):
                e["message"] = f"the file wrote more than {output_cap} bytes to stdout/stderr at import"
        with open(result_path, "w") as f:
            json.dump(result, f, default=str)
    except BaseException:
        code = 3
    finally:
        os._exit(code)


def read_capped(path, cap):
    try:
        with open(path, "rb") as f:
            return f.read(cap).decode("utf-8", "replace")
    except OSError:
        return ""


def parse_one(folder, rel, timeout, memory_mb, output_cap, workdir):
    result_path = os.path.join(workdir, "result.json")
    if os.path.exists(result_path):
        os.unlink(result_path)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        parse_in_child(folder, rel, result_path, timeout, memory_mb, output_cap)
    deadline = time.monotonic() + timeout
    status = None
    while True:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        if time.monotonic() > deadline:
            for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    target()
                except OSError:
                    pass
            os.waitpid(pid, 0)
            return {"dags": [], "errors": [error(
                f"DAG file import timed out after {timeout:g} s (python.dagbag_import_timeout); "
                "the import was killed")]}
        time.sleep(0.005)
    # Whatever the child started in its group is not left behind.
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        with open(result_path) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        how = f"was killed by signal {name}"
        if sig == signal.SIGKILL:
            how += " (out of memory?)"
    else:
        how = f"exited with status {os.WEXITSTATUS(status)}"
    return {"dags": [], "errors": [error(f"the DAG file import {how} before producing a result "
                                         "(os._exit, a crash, or the memory limit)")]}


def warm_up():
    """Runs the lazy imports of a parse and a serialization once, before any fork."""
    try:
        from airflow.dag_processing.dagbag import DagBag
        from airflow.providers.standard.operators.bash import BashOperator
        from airflow.sdk import DAG, task
        from airflow.serialization.serialized_objects import DagSerialization

        with tempfile.TemporaryDirectory() as empty:
            DagBag(dag_folder=empty, bundle_path=empty, safe_mode=True, load_op_links=False)
        with DAG("updraft_warm_up", schedule=None) as dag:
            @task
            def noop():
                pass

            noop() >> BashOperator(task_id="b", bash_command="true")
        DagSerialization.to_dict(dag)
    except Exception:
        traceback.print_exc()


def main():
    folder = os.path.abspath(sys.argv[1])
    timeout = float(sys.argv[2])
    memory_mb = int(sys.argv[3])
    output_cap = int(sys.argv[4])
    out = os.fdopen(os.dup(1), "w")
    # Our own stdout carries only results; anything else printed goes to stderr.
    os.dup2(2, 1)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    os.environ.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "0")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", folder)
    # Importing Airflow once here is what makes forking per file cheap.
    import airflow.dag_processing.dagbag  # noqa: F401
    import airflow.serialization.serialized_objects  # noqa: F401
    import airflow.providers.standard.operators.bash  # noqa: F401
    import airflow.providers.standard.operators.empty  # noqa: F401
    import airflow.providers.standard.operators.python  # noqa: F401

    warm_up()
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    with tempfile.TemporaryDirectory(prefix="updraft-parse-") as workdir:
        for line in sys.stdin:
            rel = line.rstrip("\n")
            if not rel:
                continue
            started = time.monotonic()
            result = parse_one(folder, rel, timeout, memory_mb, output_cap, workdir)
            result["file"] = rel
            result["seconds"] = round(time.monotonic() - started, 3)
            out.write(json.dumps(result, default=str) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
