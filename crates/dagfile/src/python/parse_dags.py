"""Parses Python DAG files for Updraft with the user's Airflow installation.

Usage: python parse_dags.py DAGS_FOLDER TIMEOUT_SECONDS MEMORY_LIMIT_MB OUTPUT_CAP_BYTES
Prints {"ready": true} once Airflow is imported, then reads requests on stdin, one per line: a
JSON list of file paths relative to DAGS_FOLDER (a line that is not a list is one path). Prints
one JSON object per file on stdout, in order: {"file", "dags": [serialized DAG dicts], "errors":
[{"message", "traceback", "line"}], "seconds"}. Runs until stdin closes.

Airflow is imported once; files are imported in forked children, so a file cannot affect the
parser: a child gets an address-space limit, its stdout/stderr go to a size-capped file (the cap
applies per file), each file is timed on its own and a child past the timeout is killed with its
process group, and whatever a file does at import (sys.exit, os._exit, a crash) becomes an
import error of that file. A child stops after a file that failed, so a failed import never
shares a process with another file.
"""

import gc
import json
import os
import re
import resource
import select
import signal
import sys
import tempfile
import time
import traceback

LINE_RE = re.compile(r'File "([^"]*)", line (\d+)')
# Files one forked child imports at most; bounds what modules of earlier files it still holds.
FILES_PER_CHILD = 100
# What a child writes after the answer of a file that failed, before it exits on purpose.
STOP = b'{"stop": true}\n'


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


def parse_file(folder, rel, memory_mb, output_cap, out):
    """Imports one file in this (forked) process; returns its result."""
    result = {"dags": [], "errors": []}
    path = os.path.abspath(os.path.join(folder, rel))
    # Each file gets the whole output cap: the capture file starts empty for it.
    os.ftruncate(out.fileno(), 0)
    os.lseek(out.fileno(), 0, os.SEEK_SET)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (output_cap, hard))
    try:
        from airflow.dag_processing.dagbag import DagBag
        from airflow.serialization.serialized_objects import DagSerialization

        bag = DagBag(dag_folder=path, bundle_path=folder, safe_mode=True, load_op_links=False)
        for key, tb in bag.import_errors.items():
            result["errors"].append(error(first_line(tb), tb, line_of(tb, path)))
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
    sys.stdout.flush()
    sys.stderr.flush()
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    for e in result["errors"]:
        if "[Errno 27] File too large" in (e["message"] + e["traceback"]):
            e["message"] = f"the file wrote more than {output_cap} bytes to stdout/stderr at import"
    return result


def parse_in_child(folder, files, memory_mb, output_cap, pipe_w):
    """Runs in the forked child: imports `files` one after the other and writes one JSON line
    per file to `pipe_w`; never returns.

    Forking costs more than importing a small DAG file (the parser holds all of Airflow), so one
    child imports several files in turn. It stops after a file that failed in any way: whatever
    that import left behind (a half-imported module, a patched library) never meets another
    file. The parent times each file on its own and starts a new child for the files left after
    a child that died or was killed.
    """
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
        for rel in files:
            started = time.monotonic()
            result = parse_file(folder, rel, memory_mb, output_cap, out)
            result["seconds"] = round(time.monotonic() - started, 3)
            data = (json.dumps(result, default=str) + "\n").encode()
            if result["errors"]:
                data += STOP
            view = memoryview(data)
            while view:
                view = view[os.write(pipe_w, view):]
            if result["errors"]:
                break
    except BaseException:
        code = 3
    finally:
        os._exit(code)


def child_died(status):
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


def run_child(folder, files, timeout, memory_mb, output_cap, emit):
    """Forks one child for `files` and emits a result per file it finished, plus one for the
    file it was on if it died or ran past `timeout`; returns how many files were answered."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        parse_in_child(folder, files, memory_mb, output_cap, w)
    os.close(w)
    done = 0
    buf = b""
    # Each file has `timeout` from the moment the previous one answered.
    deadline = time.monotonic() + timeout
    timed_out = False
    stopped = False
    try:
        while done < len(files):
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf and done < len(files) and not stopped:
                line, buf = buf.split(b"\n", 1)
                if line + b"\n" == STOP:
                    stopped = True
                    break
                emit(files[done], line)
                done += 1
                deadline = time.monotonic() + timeout
            if stopped:
                break
    finally:
        os.close(r)
    if timed_out:
        for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                target()
            except OSError:
                pass
    _, status = os.waitpid(pid, 0)
    # Whatever the child started in its group is not left behind.
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if done < len(files) and not stopped:
        if timed_out:
            emit(files[done], {"dags": [], "errors": [error(
                f"DAG file import timed out after {timeout:g} s (python.dagbag_import_timeout); "
                "the import was killed")]})
        else:
            emit(files[done], child_died(status))
        done += 1
    return done


def parse_batch(folder, files, timeout, memory_mb, output_cap, emit):
    """Every file of `files` answered, in order, with as few forks as the files allow."""
    start = 0
    while start < len(files):
        part = files[start:start + FILES_PER_CHILD]
        start += run_child(folder, part, timeout, memory_mb, output_cap, emit)


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
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
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
    # Everything Airflow allocated so far stays out of the children's garbage collections, so
    # their pages stay shared instead of being copied by the collector touching them.
    gc.collect()
    gc.freeze()
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()

    def emit(rel, result):
        # A child's answer is passed on as it came, with the file's name put in front.
        if isinstance(result, dict):
            result = json.dumps(result, default=str).encode()
        out.buffer.write(b'{"file": ' + json.dumps(rel).encode() + b", " + result.lstrip()[1:] + b"\n")
        out.flush()

    # One request per line: a JSON list of files (a bare line is one file). The process stays
    # up between requests, so a rescan pays neither the interpreter start nor Airflow's import.
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        files = json.loads(line) if line.startswith("[") else [line]
        parse_batch(folder, files, timeout, memory_mb, output_cap, emit)

if __name__ == "__main__":
    main()
