# The test harness of the code verifier. It runs inside the sandbox as the main program, beside
# the candidate's code in solution.py, and is built so that the candidate cannot fake a pass:
#
# * Two processes. The checker (this process) never runs candidate code: it forks a server child
#   that loads solution.py and answers calls ("call f with these arguments") over pipes. Test code
#   (HumanEval's check(), MBPP's asserts) runs in the checker against proxies of the candidate's
#   functions, so sys.exit/os._exit/atexit/excepthook/signal tricks in the candidate only end the
#   server, and an unanswered call is a failed test.
# * Values cross the pipe in a strict tagged encoding of exact builtin types only (int, float,
#   complex, str, bool, None, bytes, list, tuple, dict, set, frozenset; Counter/OrderedDict/
#   defaultdict as dicts); the checker rebuilds genuine
#   builtins, so comparisons in tests use Python's own ``==``, never the candidate's ``__eq__``.
#   Other objects stay in the server and are handles that can be passed back and have methods
#   called, but compare equal only to themselves.
# * The checker's stdout is the only channel for results, and every result line starts with a
#   per-run nonce. The server closes stdin and the real stdout before loading the candidate
#   (its prints go to stderr), the checker reads the nonce and the tests from stdin only after
#   forking (so they are not in the server's memory), and the checker makes itself non-dumpable
#   so another process of the same user cannot read its memory or file descriptors.
# * Expected outputs of functional tests never enter the sandbox: results are reported and the
#   verifier compares them on the host.
# Standard library only: it runs on the sandbox's python3.
import base64
import builtins
import collections
import ctypes
import json
import os
import sys
import traceback

MAX_DEPTH = 100
# Standard-library mappings whose == is dict's: sent as plain dicts (the class never crosses).
DICT_TYPES = (dict, collections.Counter, collections.OrderedDict, collections.defaultdict)


def encode(value, refs=None, depth=0):
    """Tagged JSON for exact builtin types; anything else becomes a handle (if ``refs`` is given)."""
    kind = type(value)
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if value is None:
        return ["none"]
    if kind is bool:
        return ["bool", value]
    if kind is int:
        return ["int", str(value)]
    if kind is float:
        return ["float", repr(value)]
    if kind is complex:
        return ["complex", repr(value)]
    if kind is str:
        return ["str", value]
    if kind is bytes:
        return ["bytes", base64.b64encode(value).decode()]
    if kind in (list, tuple, set, frozenset):
        return [kind.__name__, [encode(item, refs, depth + 1) for item in value]]
    if kind in DICT_TYPES:
        return ["dict", [[encode(k, refs, depth + 1), encode(v, refs, depth + 1)] for k, v in value.items()]]
    if kind is Handle:
        return ["ref", value.ref_id]
    if refs is not None:
        refs.append(value)
        return ["ref", len(refs) - 1]
    raise TypeError(f"cannot send a {kind.__name__} across the sandbox boundary")


def decode(data, resolve=None, depth=0):
    """Genuine builtins from :func:`encode`'s output; ``resolve`` maps handles to objects."""
    if depth > MAX_DEPTH or type(data) is not list or not data or type(data[0]) is not str:
        raise ValueError("malformed value")
    tag = data[0]
    if tag == "none":
        return None
    if tag == "bool" and type(data[1]) is bool:
        return data[1]
    if tag == "int" and type(data[1]) is str:
        return int(data[1])
    if tag == "float" and type(data[1]) is str:
        return float(data[1])
    if tag == "complex" and type(data[1]) is str:
        return complex(data[1])
    if tag == "str" and type(data[1]) is str:
        return data[1]
    if tag == "bytes" and type(data[1]) is str:
        return base64.b64decode(data[1])
    if tag in ("list", "tuple", "set", "frozenset") and type(data[1]) is list:
        items = [decode(item, resolve, depth + 1) for item in data[1]]
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
    if tag == "dict" and type(data[1]) is list:
        return {decode(k, resolve, depth + 1): decode(v, resolve, depth + 1) for k, v in data[1]}
    if tag == "ref" and type(data[1]) is int and resolve is not None:
        return resolve(data[1])
    raise ValueError(f"malformed value tagged {tag!r}")


class CandidateError(Exception):
    """The candidate raised, died, or answered something malformed."""


class Handle:
    """A candidate object that is not a plain value: compares equal only to itself."""

    def __init__(self, server, ref_id):
        self.server = server
        self.ref_id = ref_id

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.server.call(["method", self.ref_id, name], args, kwargs)

    def __repr__(self):
        return f"<candidate object #{self.ref_id}>"


class Server:
    """The checker's side of the pipes to the candidate server."""

    def __init__(self, requests, responses):
        self.requests = requests
        self.responses = os.fdopen(responses, "rb")

    def receive(self):
        line = self.responses.readline()
        if not line:
            raise CandidateError("the candidate program exited")
        try:
            message = json.loads(line)
        except ValueError:
            raise CandidateError("the candidate program answered garbage") from None
        if type(message) is not dict:
            raise CandidateError("the candidate program answered garbage")
        return message

    def call(self, target, args, kwargs):
        try:
            request = {"target": target, "args": encode(list(args)), "kwargs": encode(dict(kwargs))}
            write_line(self.requests, json.dumps(request))
        except (TypeError, ValueError, OSError) as error:
            raise CandidateError(f"cannot call the candidate: {error}") from None
        message = self.receive()
        if "raised" in message:
            raise CandidateError(f"the candidate raised {str(message['raised'])[:300]}")
        try:
            return decode(message["value"], lambda ref_id: Handle(self, ref_id))
        except (KeyError, TypeError, ValueError) as error:
            raise CandidateError(f"malformed answer from the candidate: {error}") from None


def write_line(fd, text):
    """One protocol line, written whole (pipes carry bytes: no text layer on either end)."""
    data = memoryview((text + "\n").encode())
    while data:
        data = data[os.write(fd, data):]


def serve(requests, responses):
    """The candidate server: load solution.py, then answer calls until the checker hangs up."""
    incoming = os.fdopen(requests, "rb")
    refs = []

    def send(message):
        write_line(responses, json.dumps(message))

    namespace = {"__name__": "solution", "__builtins__": builtins}
    try:
        with open("solution.py", "rb") as handle:  # (compiled as python3 reads a file: its coding line)
            source = handle.read()
        exec(compile(source, "solution.py", "exec"), namespace)
    except BaseException:  # noqa: B036 - a failing candidate is an answer, not a harness crash
        send({"loaded": False, "error": traceback.format_exc(limit=5)[-2000:]})
        return
    send({"loaded": True, "names": [name for name, value in namespace.items()
                                    if callable(value) and not name.startswith("__")]})
    for line in incoming:
        try:
            request = json.loads(line)
            kind, *where = request["target"]
            if kind == "name":
                function = namespace[where[0]]
            else:
                function = getattr(refs[where[0]], where[1])
            args = decode(request["args"], refs.__getitem__)
            kwargs = decode(request["kwargs"], refs.__getitem__)
            send({"value": encode(function(*args, **kwargs), refs)})
        except BaseException as error:  # noqa: B036 - SystemExit inside a call is a failed call
            send({"raised": f"{type(error).__name__}: {error}"[:500]})


def candidate_function(server, names, name, method_of=None):
    """A proxy for the candidate's function ``name`` (or ``Class().name`` for LeetCode-style code)."""
    if name in names:
        return lambda *args, **kwargs: server.call(["name", name], args, kwargs)
    if method_of in names:
        instance = server.call(["name", method_of], (), {})
        if type(instance) is Handle:
            return getattr(instance, name)
    raise CandidateError(f"the program defines no function {name!r}")


def close_other_descriptors(keep):
    """The candidate keeps its stdio and its own pipes only: no descriptor of the checker's (nor
    one the checker's own runner holds, e.g. a sandbox's control socket) reaches it."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def main():
    # (pythonapi: the process's own symbols, libc's among them, loaded once with ctypes)
    if ctypes.pythonapi.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE = 0
        sys.stderr.write("harness: cannot make itself non-dumpable\n")
        os._exit(3)
    requests_read, requests_write = os.pipe()
    responses_read, responses_write = os.pipe()
    if os.fork() == 0:
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(2, 1)
            os.close(null)
            close_other_descriptors((requests_read, responses_write))
            sys.stdout = sys.stderr  # (sys.stdin reads descriptor 0: /dev/null now)
            serve(requests_read, responses_write)
        finally:
            os._exit(0)
    os.close(requests_read)
    os.close(responses_write)
    spec = json.loads(sys.stdin.read())
    nonce = spec["nonce"]
    server = Server(requests_write, responses_read)

    def report(*fields):
        sys.stdout.write(" ".join([nonce, *fields]) + "\n")
        sys.stdout.flush()

    # The tests are compiled (and a HumanEval prompt run) while the candidate loads its program.
    kind = spec["kind"]
    namespace = {"__name__": "__tests__"}
    if kind == "humaneval":
        if spec.get("prompt"):
            exec(compile(spec["prompt"], "prompt.py", "exec"), namespace)
        try:
            test_code = compile(spec["test"], "test.py", "exec")
        except SyntaxError as error:  # the test's failure, reported when it runs
            test_code = error
    elif kind != "functional":
        setup_code = compile(spec.get("setup") or "", "setup.py", "exec")
        test_codes = [compile(statement, f"test_{index}.py", "exec") for index, statement in enumerate(spec["tests"])]
    try:
        hello = server.receive()
    except CandidateError as error:
        hello = {"loaded": False, "error": str(error)}
    names = set(hello.get("names") or [])
    if not hello.get("loaded"):
        sys.stderr.write(str(hello.get("error"))[-2000:] + "\n")

    def run_test(index, test):
        try:
            test()
        except BaseException as error:  # noqa: B036 - any failure of a test is reported, then the next
            detail = f"{type(error).__name__}: {error}"[:500]
            report("fail", str(index), json.dumps(detail))
            return
        report("pass", str(index))

    if kind == "functional":
        def call(arguments):
            function = candidate_function(server, names, spec["fn_name"], "Solution")
            return function(*decode(arguments))

        for index, arguments in enumerate(spec["inputs"]):
            try:
                report("result", str(index), json.dumps(encode(call(arguments))))
            except BaseException as error:  # noqa: B036
                report("fail", str(index), json.dumps(f"{type(error).__name__}: {error}"[:500]))
    elif kind == "humaneval":
        entry_point = spec["entry_point"]

        def check():
            # Tests may also call the function by name (HumanEval/33 compares with it).
            namespace[entry_point] = candidate_function(server, names, entry_point)
            if isinstance(test_code, SyntaxError):
                raise test_code
            exec(test_code, namespace)
            namespace["check"](namespace[entry_point])

        run_test(0, check)
    else:
        for name in names:
            namespace[name] = candidate_function(server, names, name)
        exec(setup_code, namespace)
        for index, code in enumerate(test_codes):
            run_test(index, lambda code=code: exec(code, namespace))
    report("done")


main()
