# One try through the warm pool of `run_task.py` (whose source is in UPDRAFT_SDK_RUNNER): the
# process the executor starts for a try when `python.warm_pool` is on. Kept apart from
# `run_task.py` and free of imports beyond the standard library's basics because it runs per
# try, under `python -S`: every line here is compiled again for each try.
#
#   python -S -c <this file> SOCK
import os
import sys

WORKLOAD_ENV = "UPDRAFT_TASK_WORKLOAD"


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
    sys.exit(client(sys.argv[1]))
