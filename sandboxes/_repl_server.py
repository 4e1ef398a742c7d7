# The interpreter of a persistent Python REPL (sandboxes/repl.py). It runs inside its own bubblewrap
# sandbox as an unprivileged user, started once per trajectory:
#
#   python3 -I -B _repl_server.py
#
# Requests arrive on fd 0 and replies leave on fd 1, each a 4-byte big-endian length and a UTF-8
# body (a request: the code; a reply: a JSON object). Before the first request both descriptors are
# moved out of the way, so the code's own stdin is /dev/null and its stdout/stderr (Python-level and
# fd-level, children included) go to a size-limited file in /tmp, read back after the call.
# Every call runs in one namespace dict, so names defined by one call exist in the next. A call that
# runs past its time gets a ToolTimeout raised into it (the state survives); code that swallows it is
# killed from the host. Nothing here is trusted by the host: a reply it cannot parse is a tool error.
# Standard library only: it runs on the sandbox's python3.
import ast
import io
import json
import os
import signal
import struct
import sys
import time
import traceback

OUTPUT_PATH = "/tmp/.tool-output"


class ToolTimeout(BaseException):
    """Raised into the code when its call runs out of time."""


def read_exact(fd, count):
    data = bytearray()
    while len(data) < count:
        chunk = os.read(fd, count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def on_alarm(signum, frame):
    raise ToolTimeout


def run_cell(code, namespace, filename):
    """Execute ``code``; when its last statement is an expression, print its repr as a REPL would."""
    tree = ast.parse(code, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, filename, "exec"), namespace)
    if last is not None:
        value = eval(compile(last, filename, "eval"), namespace)
        if value is not None:
            print(repr(value))


def describe(error):
    """The exception, and the line of the code it came from (the server's own frames are left out): short,
    as every character of it is a token the model reads."""
    line = None
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith("<tool call"):
            line = tb.tb_lineno
        tb = tb.tb_next
    message = "".join(traceback.format_exception_only(type(error), error))
    return message if line is None else f"line {line}: {message}"


def call(code, namespace, time_limit, number, max_bytes):
    output = os.open(OUTPUT_PATH, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    status = "ok"
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    try:
        run_cell(code, namespace, f"<tool call {number}>")
    except ToolTimeout:
        status = "timeout"
    except MemoryError:
        status = "memory"
    except BaseException as error:  # SystemExit, KeyboardInterrupt...: the code's error, reported as one
        status = "error"
        try:
            sys.stderr.write(describe(error))
        except BaseException:
            pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    with open(OUTPUT_PATH, "rb") as produced:
        text = produced.read(max_bytes + 1)
    if len(text) > max_bytes and status in ("ok", "error"):  # a flood (its write errors included) is the flood
        status = "output_limit"
    return {"status": status, "output": text[:max_bytes].decode("utf-8", "replace"), "truncated": len(text) > max_bytes}


def end_strays():
    """Kill every process the call left (all but this one and the namespace's init) and reap them: only the
    interpreter's variables outlive a call, never a background process. The kill repeats after each reap, as
    a child forked while the signal went out escapes one round."""
    for _ in range(100):
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:  # nothing left to signal
            return
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.001)


def main():
    server = os.getpid()
    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full output file is an OSError in the code, not a kill
    settings = json.loads(read_exact(requests, struct.unpack(">I", read_exact(requests, 4))[0]))
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    number = 0
    while True:
        try:
            size = struct.unpack(">I", read_exact(requests, 4))[0]
            code = read_exact(requests, size).decode("utf-8", "replace")
        except EOFError:
            return
        number += 1
        reply = call(code, namespace, settings["time_limit"], number, settings["max_output_bytes"])
        if os.getpid() != server:  # a process the code forked, back from the call: it must not answer
            os._exit(0)
        end_strays()
        body = json.dumps({**reply, "call": number}).encode()
        write_all(replies, struct.pack(">I", len(body)) + body)


main()
