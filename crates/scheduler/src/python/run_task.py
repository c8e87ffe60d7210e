# Runs one task try of a Python DAG with the stock Airflow Task SDK: validates the workload the
# scheduler built (Airflow's `ExecuteTask`) and hands it to the SDK's supervisor, which runs the
# task in a child process and talks to Updraft's Task Execution API.
#
# Embedded in the updraft binary and run with `python.executable`. The workload (it holds the
# try's token) arrives in the environment variable UPDRAFT_TASK_WORKLOAD, never on the command
# line; it is removed from the environment before any task code runs.
#
#   python -c <this file>            one try (the workload in the environment), exits with the
#                                     supervisor's exit code
#   python -c <this file> --pool SOCK a warm pool: imports the SDK once, then serves tries on the
#                                     unix socket SOCK, forking one child per try
import os
import sys

WORKLOAD_ENV = "UPDRAFT_TASK_WORKLOAD"


def preload():
    # What every try needs, imported once (in the pool before forking).
    import airflow.sdk  # noqa: F401
    import airflow.sdk.execution_time.supervisor  # noqa: F401
    import airflow.sdk.execution_time.task_runner  # noqa: F401
    from airflow.executors import workloads  # noqa: F401
    from pydantic import TypeAdapter  # noqa: F401

    # What the task runner imports to load the DAG file (the DagBag alone is half a second),
    # and the operators most DAG files use; a missing provider is simply not preloaded.
    for name in (
        "airflow.dag_processing.bundles.manager",
        "airflow.dag_processing.bundles.local",
        "airflow.dag_processing.dagbag",
        "airflow.providers.standard.operators.python",
        "airflow.providers.standard.operators.bash",
        "airflow.providers.standard.operators.empty",
        "airflow.providers.standard.decorators.python",
    ):
        try:
            __import__(name)
        except Exception:
            pass


def run(raw):
    from airflow.executors.workloads import ExecuteTask
    from airflow.sdk.execution_time.supervisor import supervise_task

    workload = ExecuteTask.model_validate_json(raw)
    server = os.environ.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "")
    return supervise_task(
        ti=workload.ti,
        bundle_info=workload.bundle_info,
        dag_rel_path=workload.dag_rel_path,
        token=workload.token,
        server=server,
        log_path=workload.log_path,
    )


def cold():
    raw = os.environ.pop(WORKLOAD_ENV, None)
    if not raw:
        sys.stderr.write(f"updraft: {WORKLOAD_ENV} is not set\n")
        return 2
    return run(raw)


def serve(path):
    """The warm pool: one request per connection. A request is the try's environment as JSON
    (`{"env": {...}, "cwd": ...}`) plus the client's stdout and stderr passed as file
    descriptors; the pool forks, the child takes over those descriptors and the environment,
    puts itself in the client's process group, runs the try and exits. The pool writes the
    child's pid, then its exit status, back on the connection; a client that goes away (killed
    by the executor) takes its try with it."""
    import array
    import json
    import signal
    import socket

    # The pool ends with the scheduler that started it, even one killed with SIGKILL (which
    # runs no clean-up): a thread watches for the parent to change.
    import threading
    import time

    parent = os.getppid()

    def watch_parent():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    preload()
    # Forked children must not inherit the pool's handling of SIGCHLD.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    srv.bind(path)
    os.umask(old)
    srv.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        conn, _ = srv.accept()
        try:
            fds = array.array("i")
            msg, ancdata, _flags, _addr = conn.recvmsg(1 << 20, socket.CMSG_LEN(3 * fds.itemsize))
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
            request = json.loads(msg)
        except Exception as e:  # a broken client: drop it
            sys.stderr.write(f"updraft pool: bad request: {e}\n")
            conn.close()
            continue
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                srv.close()
                child(conn, request, list(fds))
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        for fd in fds:
            os.close(fd)
        # A thread per try waits for its exit and reports it; the main thread keeps accepting.
        threading.Thread(target=reap, args=(conn, pid), daemon=True).start()


def child(conn, request, fds):
    import json

    pgid = request.get("pgid")
    if pgid:
        try:
            os.setpgid(0, pgid)
        except OSError:
            pass
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    if len(fds) >= 2:
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
    for fd in fds:
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    if request.get("cwd"):
        os.chdir(request["cwd"])
    conn.sendall((json.dumps({"pid": os.getpid()}) + "\n").encode())
    # The connection stays open in this process too: the pool reports the exit status on it.
    code = cold()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)


def reap(conn, pid):
    import json

    _, status = os.waitpid(pid, 0)
    try:
        conn.sendall((json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n").encode())
    except OSError:
        pass
    conn.close()


def client(path):
    """One try through the warm pool: hands the pool this process's environment, working
    directory, process group and stdout/stderr, then waits for the forked child's exit status
    and exits with it. The executor sees this process as the try (its pid, its group, its
    output); killing the group kills the child too, which joined it. Without a pool (not
    started, or gone), the try runs cold in this process."""
    import array
    import json
    import socket

    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        request = json.dumps(
            {"env": dict(os.environ), "cwd": os.getcwd(), "pgid": os.getpgid(0)}
        ).encode()
        fds = array.array("i", [1, 2])
        conn.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
    except OSError as e:
        sys.stderr.write(f"updraft: warm worker pool unavailable ({e}); starting cold\n")
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-c", os.environ["UPDRAFT_SDK_RUNNER"]])
    # The token now lives in the child; drop this copy.
    os.environ.pop(WORKLOAD_ENV, None)
    status = 1
    buf = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = json.loads(line)
            if "status" in msg:
                status = msg["status"]
    if status < 0:
        # Killed by a signal: end the same way so the executor reads the same outcome.
        import signal

        os.kill(os.getpid(), -status)
        signal.pause()
    return status


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--pool":
        serve(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == "--client":
        sys.exit(client(sys.argv[2]))
    else:
        sys.exit(cold())
