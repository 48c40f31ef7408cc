"""One annotating process for a whole build: ``afterburn cc``'s server.

A kernel build runs the compiler ~600 times.  Each ``afterburn cc`` that
annotated in its own process paid for Python, capstone and the ELF reader
before doing any work: about 0.2 s of CPU a file, more than the annotation
itself.  So the first ``afterburn cc`` that has text to annotate starts this
server, and every later one hands it the text over a Unix socket.  The
server forks one worker per CPU once, warm (so ``make -j`` parallelism is
kept); a worker annotates and assembles in the caller's directory and
environment, writes the object into the caller's private temporary
directory, and answers with what to print.

The client runs gcc itself, so gcc's diagnostics, stdin and exit status
stay the caller's.  If the server cannot be reached or started, the client
annotates in its own process: same code, same result, only slower.

The socket lives in a directory only its user can enter
(``$XDG_RUNTIME_DIR`` or ``/tmp``, ``afterburn-cc-UID``), under a name that
changes with the code (the interpreter and every afterburn source file's
size and time), so a changed Afterburn never talks to a stale server.  The
server exits after :data:`IDLE` seconds without a request; with
``$AFTERBURN_CC_STATS`` set it appends its CPU time (and its children's)
there when it exits, so that a build's CPU cost is counted in full.
``AFTERBURN_CC_SERVER=0`` turns it off.  The socket's directory must be
private: a server trusts whoever can connect (requests name files and
commands to run).
"""
from __future__ import annotations

import _socket as socket  # the C module: socket.py's enum and selectors cost a compile ~15 ms
import marshal
import os
import struct
import sys
import time
import zlib

# The client side (request) runs once per compile: it imports only what it
# needs, and speaks marshal, which both ends have built in (the socket's
# name pins both to one interpreter).

IDLE = 20.0  # seconds without a request before the server exits
_HEADER = struct.Struct("<I")


def _key() -> str:
    """Changes whenever the interpreter or any afterburn source changes."""
    pkg = os.path.dirname(os.path.abspath(__file__))
    parts = [os.path.realpath(sys.executable)]  # python and python3 are one interpreter
    for name in sorted(os.listdir(pkg)):
        if name.endswith(".py"):
            st = os.stat(os.path.join(pkg, name))
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    text = "\n".join(parts).encode()
    return f"{zlib.crc32(text):08x}{zlib.adler32(text):08x}"


def socket_path() -> str:
    base = os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/tmp", f"afterburn-cc-{os.getuid()}")
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    st = os.stat(base)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{base} is not private to this user")
    return os.path.join(base, f"{_key()}.sock")


def _send(sock, obj) -> None:
    data = marshal.dumps(obj)
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv(sock):
    head = _recvall(sock, _HEADER.size)
    if head is None:
        return None
    body = _recvall(sock, _HEADER.unpack(head)[0])
    return None if body is None else marshal.loads(body)


def _recvall(sock, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


# ---------------------------------------------------------------------------
# Client


def request(req: dict, start: bool = True) -> dict | None:
    """Send one request; None if no server could be reached (the caller
    then does the work itself)."""
    if os.environ.get("AFTERBURN_CC_SERVER") == "0":
        return None
    try:
        path = socket_path()
    except OSError:
        return None
    for attempt in range(2):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except OSError:
            s.close()
            if attempt or not start or not _start(path):
                return None
            continue
        try:
            _send(s, req)
            return _recv(s)
        except OSError:
            return None
        finally:
            s.close()
    return None


def _start(path: str) -> bool:
    """Start a server for ``path`` and wait for it to listen."""
    import subprocess

    try:
        subprocess.Popen([sys.executable, "-m", "afterburn.ccserver", path], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                         close_fds=True)  # fmt: skip
    except OSError:
        return False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return True
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.02)
    return False


def stop() -> bool:
    """Ask the server (if any) to exit once its requests are done."""
    return request({"op": "stop"}, start=False) is not None


# ---------------------------------------------------------------------------
# Server


def handle(req: dict) -> dict:
    """Do one request (in a worker): annotate and assemble, in the caller's
    directory and environment."""
    from .ccjob import annotate_job

    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    return annotate_job(req)


def serve(path: str) -> None:
    """Listen on ``path`` with one worker per CPU (forked once, warm), and
    exit when every worker has: after IDLE seconds without a request, or
    after a ``stop``."""
    import fcntl
    import socket  # the full module here: accept() and timeouts

    lock = open(f"{path}.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return  # another server is already there
    except OSError:
        pass
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    # Every import a request needs, before the workers are forked.
    from . import annotate_asm, ccjob, verify  # noqa: F401

    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    fcntl.flock(lock, fcntl.LOCK_UN)
    workers = []
    for _ in range(max(2, os.cpu_count() or 1)):
        pid = os.fork()
        if pid == 0:
            _work(srv, path)
            os._exit(0)
        workers.append(pid)
    srv.close()  # only the workers accept: once they are gone, a caller is refused, not left waiting
    for pid in workers:
        os.waitpid(pid, 0)
    for stale in (path, f"{path}.lock"):
        try:
            if stale != path or not _alive(path):
                os.unlink(stale)
        except FileNotFoundError:
            pass
    _report_cpu()


def _alive(path: str) -> bool:
    """Whether some (newer) server listens on ``path``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _work(srv, path: str) -> None:
    """One worker: take requests until idle or stopped.  A ``stop`` removes
    the socket's name, which the other workers notice within a second."""
    srv.settimeout(1.0)
    home = os.getcwd()
    last = time.monotonic()
    while time.monotonic() - last < IDLE:
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            if not os.path.exists(path):
                return
            continue
        except OSError:
            return
        last = time.monotonic()
        conn.settimeout(None)
        try:
            req = _recv(conn)
            if req is None:
                continue
            if req.get("op") == "stop":
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                _send(conn, {"ok": True})
                return
            try:
                reply = handle(req)
                _report_request(req, reply)
            except BaseException as e:  # noqa: BLE001 - every failure is an answer
                from .errors import AfterburnError

                reply = ({"error": str(e)} if isinstance(e, AfterburnError)
                         else {"internal": f"{type(e).__name__}: {e}"})  # fmt: skip
            finally:
                os.chdir(home)
            _send(conn, reply)
        except OSError:
            pass  # the caller went away: it annotates by itself
        finally:
            conn.close()


_seen = [0.0, 0.0]  # this worker's CPU and its children's at the last report


def _report_request(req: dict, reply: dict) -> None:
    """With $AFTERBURN_CC_STATS: one line per request, for profiling a build."""
    stats = os.environ.get("AFTERBURN_CC_STATS")
    if not stats:
        return
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    mine, theirs = me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime
    self_cpu, child_cpu = mine - _seen[0], theirs - _seen[1]
    _seen[:] = [mine, theirs]
    import json

    with open(stats, "a") as f:
        f.write(json.dumps({"request": req.get("name"), "passes": reply.get("passes"), "self": self_cpu,
                            "assembler": child_cpu}) + "\n")


def _report_cpu() -> None:
    stats = os.environ.get("AFTERBURN_CC_STATS")
    if not stats:
        return
    import resource

    import json

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    with open(stats, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "cpu": cpu}) + "\n")


if __name__ == "__main__":
    serve(sys.argv[1])
