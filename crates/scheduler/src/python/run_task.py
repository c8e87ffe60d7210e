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
#                                     unix socket SOCK, forking one child per try (its client is
#                                     `pool_client.py`)
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


def warm():
    """Fills, once in the pool, the per-process caches every try's supervisor fills on its
    first use, so forked tries inherit them: the Execution API client's SSL context (with the
    imports behind a first client, 0.17 s on a busy host), the secrets backends, the task log's
    processors. A failure here only means the try fills them itself."""
    try:
        import httpx
        from airflow.sdk.api.client import Client

        server = os.environ.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL") or "http://localhost"
        limits = httpx.Limits(max_keepalive_connections=1, max_connections=10)
        Client(base_url=server, limits=limits, dry_run=False, token="").close()
    except Exception:
        pass
    try:
        from airflow.sdk.execution_time.supervisor import ensure_secrets_backend_loaded

        ensure_secrets_backend_loaded()
    except Exception:
        pass
    try:
        from airflow.sdk.log import logging_processors

        logging_processors(json_output=True)
    except Exception:
        pass


class DagFiles:
    """The warm pool's DAG files, imported once per file version: the task runner re-imports
    a try's DAG file (`BundleDagBag`) in every try, about 0.1 s for a file of 40 tasks. The pool
    imports it before forking, and the forked child hands that bag to the task runner instead.
    A version is the file's and every bundle module it imported's (path, mtime, size), checked
    before each try, so an edited file or helper module is imported again. A file that fails to
    import here (a top-level Variable.get needs a supervisor, say) is remembered as such and its
    tries import it the normal way; nothing a DAG file does at import can stop the pool."""

    # An import in the pool blocks every try behind it; past this it counts as failed.
    IMPORT_TIMEOUT = 30

    def __init__(self):
        self.bundles = {}
        # absolute path -> (deps, bag or None)
        self.files = {}

    def bundle_path(self, name):
        if name not in self.bundles:
            from airflow.dag_processing.bundles.manager import DagBundlesManager

            bundle = DagBundlesManager().get_bundle(name=name, version=None)
            self.bundles[name] = os.fspath(bundle.path)
        return self.bundles[name]

    @staticmethod
    def stamp(path):
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def fresh(self, deps):
        return all(self.stamp(path) == stamp for path, stamp in deps)

    def get(self, raw):
        """The bag of the workload's DAG file (None: let the task runner import it), as
        `(dag_folder, bundle_path, bundle_name, bag)`."""
        import json

        work = json.loads(raw)
        info = work.get("bundle_info") or {}
        rel = work.get("dag_rel_path")
        name = info.get("name")
        if not rel or not name or info.get("version") is not None:
            return None
        root = self.bundle_path(name)
        path = os.fspath(os.path.join(root, rel))
        hit = self.files.get(path)
        if hit is None or not self.fresh(hit[0]):
            hit = self.load(path, root, name)
            self.files[path] = hit
        if hit[1] is None:
            return None
        return (path, root, name, hit[1])

    def load(self, path, root, name):
        import signal

        from airflow.dag_processing.dagbag import BundleDagBag

        # The file's own imports of the DAGs folder must be fresh too (an edited helper module
        # is why this file is imported again): the folder's modules leave `sys.modules` first.
        # Bags already loaded keep the module objects they hold.
        # Never the interpreter's own (a DAGs folder that holds the virtualenv).
        prefix = root.rstrip(os.sep) + os.sep
        installed = tuple(
            p.rstrip(os.sep) + os.sep for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}
        )
        for mod_name, mod in list(sys.modules.items()):
            f = getattr(mod, "__file__", None)
            if isinstance(f, str) and f.startswith(prefix) and not f.startswith(installed):
                del sys.modules[mod_name]
        before = set(sys.modules)
        stamp = self.stamp(path)

        def expired(_sig, _frame):
            raise TimeoutError(f"importing {path} took over {self.IMPORT_TIMEOUT} s")

        cwd = os.getcwd()
        old = signal.signal(signal.SIGALRM, expired)
        signal.alarm(self.IMPORT_TIMEOUT)
        # What the import prints or logs (a failing file's traceback) is the try's business:
        # it sees the same when its task runner imports the file. Not the scheduler's console.
        sys.stdout.flush()
        sys.stderr.flush()
        saved = (os.dup(1), os.dup(2))
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        bag = None
        error = None
        try:
            bag = BundleDagBag(
                dag_folder=path,
                safe_mode=False,
                load_op_links=False,
                bundle_path=root,
                bundle_name=name,
            )
        except BaseException as e:  # noqa: BLE001 - any failure means "not preloaded"
            error = e
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            try:
                os.chdir(cwd)
            except OSError:
                pass
        if error is not None:
            sys.stderr.write(f"updraft pool: {path} not preloaded: {error}\n")
        deps = [(path, stamp)]
        for mod in set(sys.modules) - before:
            f = getattr(sys.modules.get(mod), "__file__", None)
            if isinstance(f, str) and f.startswith(prefix) and f != path:
                deps.append((f, self.stamp(f)))
        if bag is None or bag.import_errors or not bag.dags:
            return (deps, None)
        return (deps, bag)


def use_preloaded(entry):
    """In a forked child: the task runner's `BundleDagBag(...)` of this DAG file returns the
    pool's bag (this process's copy of it) instead of importing the file again."""
    import airflow.dag_processing.dagbag as dagbag

    path, root, name, bag = entry
    real = dagbag.BundleDagBag

    class Preloaded(real):
        def __new__(cls, *args, **kwargs):
            folder = kwargs.get("dag_folder", args[0] if args else None)
            if (
                folder is not None
                and os.fspath(folder) == path
                and os.fspath(kwargs.get("bundle_path") or "") == root
                and kwargs.get("bundle_name") == name
                and not kwargs.get("safe_mode", True)
            ):
                # Not an instance of this class, so `__init__` (the import) does not run.
                return bag
            obj = real.__new__(real)
            obj.__init__(*args, **kwargs)
            return obj

    dagbag.BundleDagBag = Preloaded


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
    import gc
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
    warm()
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
    dags = DagFiles()
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
        entry = None
        try:
            raw = request["env"].get(WORKLOAD_ENV)
            if raw:
                entry = dags.get(raw)
        except Exception as e:  # the try imports its DAG file itself
            sys.stderr.write(f"updraft pool: DAG file not preloaded: {e}\n")
        # Everything the pool holds so far moves out of the collector's reach: a collection in
        # the child would otherwise touch every object and copy the pool's memory page by page.
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                srv.close()
                child(conn, request, list(fds), entry)
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


def child(conn, request, fds, entry=None):
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
    if entry is not None:
        use_preloaded(entry)
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


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--pool":
        serve(sys.argv[2])
    else:
        sys.exit(cold())
