"""Tests of tproxy_worker: the pure pieces in-process, the runtime as a
subprocess spoken to in frames, as a host would.

    python3 -m unittest discover -s workers/python -v
"""

import base64
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import tproxy_worker as tw  # noqa: E402

WORKER = os.path.join(HERE, "tproxy_worker.py")
TIMEOUT = 10.0
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

# A worker with drivers of the tests' own, besides the conformance drivers.
TEST_WORKER = textwrap.dedent('''
    import logging, os, sys, time
    sys.path.insert(0, os.environ["TPROXY_PY_DIR"])
    from tproxy_worker import Worker, main, register_conformance_drivers, StepError, RPCError, ConfigError

    w = Worker("test-worker", "0.0.1", forward_logging=True)
    register_conformance_drivers(w)

    def boom(params):
        raise RPCError(-32050, "custom failure", {"why": "test"})

    w.handle("echo_params", lambda params: {"got": params})
    w.handle("boom", boom)
    w.handle("crash", lambda params: 1 / 0)

    @w.driver("liblog")
    def liblog(step):
        logging.getLogger("some.library").warning("library says %s", "hi")
        logging.getLogger("some.library").info("not sent: below the logger's level")

    @w.driver("echo")
    def echo(step):
        dsn = step.config.get("dsn", "")
        step.event("echo", {"config": step.config, "text": "dsn is " + dsn})
        step.log.debug("debug %s", dsn)
        step.log.info("info %s", dsn, extra={"k": "v", "password": "pw-attr"})
        step.log.warning("warn")
        step.log.error("error")
        step.metric("m", 1.5, unit="s", tags={"token": "abc", "t": dsn})
        if step.config.get("fail"):
            raise ValueError("failed with " + dsn)

    @w.driver("links")
    def links(step):
        d = step.artifact_dir
        with open(os.path.join(d, "real.txt"), "w") as f:
            f.write("real")
        os.symlink("real.txt", os.path.join(d, "inside_link"))
        outside = os.path.join(step.dir, "outside.txt")
        with open(outside, "w") as f:
            f.write("outside")
        os.symlink(outside, os.path.join(d, "outside_link"))
        os.symlink("/nonexistent/x", os.path.join(d, "dangling"))
        os.mkdir(os.path.join(d, "sub"))
        os.symlink("sub", os.path.join(d, "dirlink"))
        os.mkfifo(os.path.join(d, "fifo"))
        os.symlink("../../../..", os.path.join(d, "up"))

    class Table:
        def summary(self):
            return {"type": "table", "rows": 3}

    @w.driver("outputs")
    def outputs(step):
        step.set_output("t", Table())
        step.set_output("l", [1, 2, 3])
        step.set_output("s", "abcd")
        step.set_output("f", 1.5)
        step.set_output("n", None)

    @w.driver("sysexit")
    def sysexit(step):
        sys.exit(3)

    @w.driver("busy")
    def busy(step):
        i = 0
        try:
            while True:
                step.event("tick", {"i": i})
                i += 1
                time.sleep(0.01)
        finally:
            print("busy stopped at", i)

    @w.driver("host_name")
    def host_name(step):
        for name in ("run_complete", "step_timeout", ""):
            try:
                step.event(name)
            except ValueError:
                step.event("refused", {"name": name})

    @w.driver("own_error")
    def own_error(step):
        step.event("waiting")
        while not step.cancelled:
            time.sleep(0.01)
        raise RuntimeError("connection reset while stopping")

    @w.driver("stubborn")
    def stubborn(step):
        time.sleep(60)

    @w.driver("inputs")
    def inputs(step):
        step.event("v", {"v": step.input("missing", "dflt"), "dir": os.path.isdir(step.dir)})
        step.input("missing")

    @w.driver("typed")
    def typed(step):
        class Oops(Exception):
            error_type = "oops_type"
        raise Oops("typed failure")

    @w.driver("categories")
    def categories(step):
        kind = step.config["raise"]
        if kind == "timeout":
            raise TimeoutError("query timed out")
        if kind == "config":
            raise ConfigError("config.path is required")
        if kind == "untyped_step_error":
            raise StepError("no type given")
        raise OSError("disk on fire")

    @w.driver("big")
    def big(step):
        step.event("big", {"s": "x" * int(step.config["n"])})

    main(w)
''')


class Proc:
    """A worker subprocess and the frames it writes."""

    def __init__(self, script=WORKER, env=None):
        self.work = tempfile.mkdtemp(prefix="tproxy-py-work-")
        e = dict(os.environ)
        e["TPROXY_PY_DIR"] = HERE
        e["TPROXY_WORK_DIR"] = self.work  # session directories, even of killed workers, go away with it
        e.update(env or {})
        self.p = subprocess.Popen([sys.executable, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=e)
        self.q = queue.Queue()
        self.raw = []
        self.err = bytearray()
        self._next = 1000
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._errs, daemon=True).start()

    def _out(self):
        for line in self.p.stdout:
            self.raw.append(line)
            self.q.put(line)
        self.q.put(None)

    def _errs(self):
        while True:
            b = self.p.stderr.read1(65536) if hasattr(self.p.stderr, "read1") else self.p.stderr.read(65536)
            if not b:
                return
            self.err += b

    def send_raw(self, b):
        self.p.stdin.write(b)
        self.p.stdin.flush()

    def send(self, obj):
        self.send_raw(json.dumps(obj).encode() + b"\n")

    def request(self, method, params=None, id=None):
        if id is None:
            self._next += 1
            id = self._next
        msg = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return id

    def recv(self, timeout=TIMEOUT):
        line = self.q.get(timeout=timeout)
        if line is None:
            raise EOFError("worker stdout closed; stderr:\n" + self.err.decode(errors="replace"))
        return json.loads(line)

    def until(self, id, timeout=TIMEOUT):
        """Read until the response to id: (notifications, response)."""
        notes = []
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv(max(0.01, deadline - time.monotonic()))
            if "method" in m:
                notes.append(m)
            elif m.get("id") == id and type(m.get("id")) is type(id):
                return notes, m
            else:
                notes.append(m)

    def call(self, method, params=None, id=None, timeout=TIMEOUT):
        return self.until(self.request(method, params, id), timeout)

    def close(self, timeout=TIMEOUT):
        try:
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        return self.p.wait(timeout)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def dispose(self):
        self.kill()
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                f.close()
            except OSError:
                pass
        shutil.rmtree(self.work, ignore_errors=True)


def events(notes, name=None):
    evs = [n["params"] for n in notes if n.get("method") == "event"]
    return [e for e in evs if name is None or e["name"] == name]


def metrics(notes, name=None):
    ms = [n["params"] for n in notes if n.get("method") == "metric"]
    return [m for m in ms if name is None or m["name"] == name]


def manifest(*steps):
    return {"steps": [{"id": s[0], "driver": s[1], **({"config": s[2]} if len(s) > 2 else {})} for s in steps]}


class WorkerTest(unittest.TestCase):
    """A test with a worker subprocess; every stdout line is checked to be a
    JSON-RPC 2.0 message."""

    script = WORKER
    env = None

    def setUp(self):
        self.w = Proc(self.script, self.env)

    def tearDown(self):
        self.w.dispose()
        for line in self.w.raw:
            m = json.loads(line)
            self.assertIsInstance(m, dict)
            self.assertEqual(m.get("jsonrpc"), "2.0", line)

    def restart(self, script):
        """Replace the worker by one running script."""
        self.w.dispose()
        self.w = Proc(script, self.env)

    def prepare(self, *steps, session="s1", **extra):
        params = {"session_id": session, "manifest": manifest(*steps)}
        params.update(extra)
        notes, resp = self.w.call("prepare", params)
        self.assertIn("result", resp, resp)
        return notes, resp

    def exec(self, step_id, driver, config=None, inputs=None, timeout=TIMEOUT):
        p = {"step_id": step_id, "driver": driver}
        if config is not None:
            p["config"] = config
        if inputs is not None:
            p["inputs"] = inputs
        return self.w.call("exec_step", p, timeout=timeout)

    def assertError(self, resp, code):
        self.assertIn("error", resp, resp)
        self.assertEqual(resp["error"]["code"], code, resp)
        self.assertIsInstance(resp["error"]["message"], str)

    def fetch(self, step_id, path, offset=0, length=0):
        _, r = self.w.call("fetch_artifact", {"step_id": step_id, "path": path, "offset": offset, "length": length})
        return r


# ---------------------------------------------------------------------------
# Pure pieces


class MaskerTest(unittest.TestCase):
    def test_default_keys(self):
        m = tw.Masker()
        for k in ("password", "DB_Password", "apiKey", "x-auth-token", "AWS_ACCESS_KEY_ID", "private-key", "client_secret",
                  "passwd", "credentials"):
            self.assertTrue(m.secret_key(k), k)
        for k in ("path", "user", "host", "key"):
            self.assertFalse(m.secret_key(k), k)

    def test_extra_keys(self):
        m = tw.Masker(keys=["DSN"])
        self.assertTrue(m.secret_key("postgres_dsn"))
        self.assertTrue(m.secret_key("password"))

    def test_key_rule_shared_with_go(self):
        # testdata/secret_keys.json is the Go runtime's table too
        # (secret_keys_test.go): both runtimes keep one rule.
        path = os.path.join(HERE, "..", "..", "testdata", "secret_keys.json")
        if not os.path.exists(path):
            self.skipTest("no %s outside the repository" % path)
        with open(path, encoding="utf-8") as f:
            cases = json.load(f)
        m = tw.Masker()
        for k in cases["secret"]:
            self.assertTrue(m.secret_key(k), k)
        for k in cases["harmless"]:
            self.assertFalse(m.secret_key(k), k)
        for c in cases["patterns"]:
            self.assertFalse(m.secret_key(c["key"]), c)
            self.assertEqual(tw.Masker(keys=[c["pattern"]]).secret_key(c["key"]), c["match"], c)

    def test_config_and_strings(self):
        m = tw.Masker(pointers=["/connection/url", "/list/1", "/a~1b/c~0d"])
        cfg = {"password": "hunter22", "path": "/data", "nested": {"api_key": {"x": "deep-secret", "n": 123456}},
               "connection": {"url": "pg://u:pw@h/db"}, "list": ["keep", "secret-item"], "a/b": {"c~d": "escaped-secret"},
               "short": {"token": "abc"}, "flag": {"secret": True}}
        out = m.config(cfg)
        self.assertEqual(out["password"], tw.MASKED)
        self.assertEqual(out["path"], "/data")
        self.assertEqual(out["nested"]["api_key"], tw.MASKED)
        self.assertEqual(out["connection"]["url"], tw.MASKED)
        self.assertEqual(out["list"], ["keep", tw.MASKED])
        self.assertEqual(out["a/b"]["c~d"], tw.MASKED)
        self.assertEqual(cfg["password"], "hunter22", "config() must not modify its argument")
        s = "hunter22 deep-secret 123456 pg://u:pw@h/db secret-item escaped-secret abc True"
        self.assertEqual(m.string(s), " ".join([tw.MASKED] * 6) + " abc True")

    def test_longest_first(self):
        m = tw.Masker()
        m.add_values("abcd", "abcdefgh")
        self.assertEqual(m.string("xabcdefghx abcd"), "x%sx %s" % (tw.MASKED, tw.MASKED))

    def test_short_values_not_in_text(self):
        m = tw.Masker()
        m.learn({"token": "abc"})
        self.assertEqual(m.string("abc"), "abc")
        self.assertEqual(m.value({"token": "abc"}), {"token": tw.MASKED})
        self.assertFalse(m.has_values)

    def test_value(self):
        m = tw.Masker()
        m.learn({"password": "hunter22"})
        v = {"a": ["x hunter22 y", {"secret_thing": [1, 2]}], "n": 3}
        self.assertEqual(m.value(v), {"a": ["x %s y" % tw.MASKED, {"secret_thing": tw.MASKED}], "n": 3})
        self.assertEqual(m.tags({"token": "t", "x": "hunter22"}), {"token": tw.MASKED, "x": tw.MASKED})

    def test_bad_pointers(self):
        for p in ("", "no-slash", "/a~2", "/a~"):
            with self.assertRaises(ValueError, msg=p):
                tw.Masker(pointers=[p])
        tw.Masker(pointers=["/", "/a/~0/~1"])  # "/" names the member "" and is fine


class PureTest(unittest.TestCase):
    def test_validate_id(self):
        for ok in ("a", "A1", "9", "run-42", "a.b_c-d", "x" * 128):
            self.assertEqual(tw.validate_id(ok), ok)
        for bad in ("", "-a", ".a", "_a", "a b", "a/b", "é", "x" * 129, None, 3, "a\n"):
            with self.assertRaises(ValueError, msg=repr(bad)):
                tw.validate_id(bad)

    def test_check_artifact_path(self):
        for ok in ("a", "a/b.txt", "cleaned_config.json", "a..b"):
            tw.check_artifact_path(ok)
        for bad in ("", "/a", "../a", "a/../b", "a/./b", ".", "a//b", "a/", "a\\b", "a\x00b", None):
            with self.assertRaises(ValueError, msg=repr(bad)):
                tw.check_artifact_path(bad)

    def test_summarize(self):
        class T:
            def summary(self):
                return {"type": "table", "rows": 2}
        self.assertEqual(tw.summarize(T()), {"type": "table", "rows": 2})
        self.assertEqual(tw.summarize([1, 2, 3]), {"type": "list", "len": 3})
        self.assertEqual(tw.summarize({"a": 1}), {"type": "dict", "len": 1})
        self.assertEqual(tw.summarize("abcd"), {"type": "str", "len": 4})
        self.assertEqual(tw.summarize(b"ab"), {"type": "bytes", "len": 2})
        self.assertEqual(tw.summarize(7), {"type": "int", "value": 7})
        self.assertEqual(tw.summarize(1.5), {"type": "float", "value": 1.5})
        self.assertEqual(tw.summarize(True), {"type": "bool", "value": True})
        self.assertEqual(tw.summarize(None), {"type": "NoneType", "value": None})
        self.assertEqual(tw.summarize(object()), {"type": "object"})
        self.assertEqual(tw.summarize(T), {"type": "type"})  # a class with a summary method is not called unbound

    def test_to_json(self):
        import datetime
        d = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        self.assertEqual(tw._to_json({1: (1, float("nan")), "d": d, "s": {3}, "o": object}),
                         {"1": [1, None], "d": "2026-01-02T03:04:05.000000Z", "s": [3], "o": str(object)})

    def test_timestamp(self):
        self.assertRegex(tw.utc_now(), TS_RE)

    def test_list_artifacts(self):
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "b", "c"))
            with open(os.path.join(d, "b", "c", "x.txt"), "wb") as f:
                f.write(b"hello")
            with open(os.path.join(d, "a.txt"), "wb") as f:
                f.write(b"")
            os.symlink("a.txt", os.path.join(d, "link"))
            os.symlink("/etc/passwd", os.path.join(d, "escape"))
            refused = []
            arts = tw.list_artifacts(d, lambda p, r, n=1: refused.append(p))
            self.assertEqual([a["path"] for a in arts], ["a.txt", "b/c/x.txt", "link"])
            self.assertEqual(arts[1], {"path": "b/c/x.txt", "size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()})
            self.assertEqual(refused, ["escape"])

    def test_worker_registration(self):
        w = tw.Worker("n", "v")

        @w.driver("b")
        def b(step):
            pass

        class D:
            def run(self, step):
                pass

        w.register("a", D())
        self.assertEqual(w.drivers, ["a", "b"])
        with self.assertRaises(ValueError):
            w.register("a", b)
        with self.assertRaises(ValueError):
            w.register("", b)
        with self.assertRaises(ValueError):
            w.handle("ping", lambda p: None)
        with self.assertRaises(ValueError):
            w.handle("$/x", lambda p: None)

    def test_error_type(self):
        # The categories, and which exception falls in which; the names
        # are the Go runtime's (tproxy.ErrorType* in protocol.go).
        self.assertEqual((tw.ERROR_DRIVER, tw.ERROR_CONFIG, tw.ERROR_INPUT, tw.ERROR_TIMEOUT,
                          tw.ERROR_CANCELLED, tw.ERROR_PANIC),
                         ("driver", "config", "input", "timeout", "cancelled", "panic"))

        class Own(Exception):
            error_type = "quota"

        class Empty(Exception):
            error_type = ""

        for exc, want in [
            (ValueError("x"), "driver"),
            (KeyError("x"), "driver"),
            (OSError("x"), "driver"),
            (tw.StepError("x"), "driver"),
            (tw.StepError("x", error_type="missing_table"), "missing_table"),
            (Own("x"), "quota"),
            (Empty("x"), "driver"),
            (tw.ConfigError("x"), "config"),
            (tw.InputMissing("x"), "input"),
            (TimeoutError("x"), "timeout"),
            (tw.StepError("x", error_type="input"), "input"),
            (SystemExit(3), "panic"),
            (KeyboardInterrupt(), "panic"),
        ]:
            self.assertEqual(tw._error_type(exc), want, repr(exc))
        self.assertIsInstance(tw.ConfigError("x"), ValueError)

    def test_cancelled_is_not_an_exception(self):
        self.assertTrue(issubclass(tw.Cancelled, BaseException))
        self.assertFalse(issubclass(tw.Cancelled, Exception))


# ---------------------------------------------------------------------------
# The runtime, over pipes


class HandshakeTest(WorkerTest):
    def test_ping(self):
        _, r = self.w.call("ping", {"data": "handshake", "protocol": 99}, id=1)
        res = r["result"]
        self.assertEqual(res["status"], "pong")
        self.assertEqual(res["echo"], "handshake")
        self.assertEqual(res["protocol"], 1)
        self.assertRegex(res["timestamp"], TS_RE)
        self.assertEqual(res["worker"]["name"], "tproxy-python-conformance")
        drivers = res["worker"]["drivers"]
        self.assertEqual(drivers, sorted(drivers))
        for d in ("conform.emit", "conform.sleep", "conform.fail", "conform.artifacts", "conform.stdout", "conform.input"):
            self.assertIn(d, drivers)
        _, r = self.w.call("ping", id="str-id")
        self.assertEqual(r["id"], "str-id")
        self.assertEqual(r["result"]["echo"], "")
        _, r = self.w.call("ping", {}, id=2.5)
        self.assertEqual(r["id"], 2.5)
        self.assertEqual(self.w.close(), 0)

    def test_ping_bad_params(self):
        _, r = self.w.call("ping", {"data": 3})
        self.assertError(r, -32602)
        self.send_and_expect({"jsonrpc": "2.0", "id": 5, "method": "ping", "params": [1]}, -32602, 5)

    def send_and_expect(self, msg, code, id):
        self.w.send(msg)
        r = self.w.recv()
        self.assertEqual(r["id"], id)
        self.assertError(r, code)


class ErrorsTest(WorkerTest):
    def test_not_prepared(self):
        for method, params in (("exec_step", {"step_id": "a", "driver": "conform.emit"}), ("cleanup", None),
                               ("fetch_artifact", {"step_id": "a", "path": "x", "offset": 0, "length": 0})):
            notes, r = self.w.call(method, params)
            self.assertError(r, -32001)
            self.assertEqual(events(notes), [])

    def test_unknown_method(self):
        _, r = self.w.call("no_such_method", id=10)
        self.assertError(r, -32601)
        self.assertEqual(r["id"], 10)

    def test_prepare_errors(self):
        _, r = self.w.call("prepare", {"session_id": "s1", "manifest": manifest(("a", "teleport"))})
        self.assertError(r, -32003)
        self.assertIn("teleport", r["error"]["message"])
        bad = [
            {"manifest": manifest(("a", "conform.emit"))},
            {"session_id": "bad id", "manifest": manifest(("a", "conform.emit"))},
            {"session_id": "s1"},
            {"session_id": "s1", "manifest": {"steps": "x"}},
            {"session_id": "s1", "manifest": manifest(("-a", "conform.emit"))},
            {"session_id": "s1", "manifest": manifest(("a", "conform.emit"), ("a", "conform.emit"))},
            {"session_id": "s1", "manifest": manifest(("a", "conform.emit")), "log_level": "verbose"},
            {"session_id": "s1", "manifest": manifest(("a", "conform.emit")), "log_level": 3},
            {"session_id": "s1", "manifest": manifest(("a", "conform.emit")), "secrets": {"pointers": ["nope"]}},
            {"session_id": "s1", "manifest": manifest(("a", "conform.emit")), "config": [1]},
            {"session_id": "s1", "manifest": {"steps": [{"id": "a", "driver": "conform.emit", "inputs": {"x": {"key": "k"}}}]}},
        ]
        for params in bad:
            notes, r = self.w.call("prepare", params)
            self.assertError(r, -32602)
            self.assertEqual(events(notes), [], params)
        for level in ("DEBUG", "Warn", "error", "info"):
            _, r = self.w.call("prepare", {"session_id": "s1", "manifest": manifest(("a", "conform.emit")), "log_level": level})
            self.assertIn("result", r, level)
        _, r = self.w.call("prepare", {"session_id": "s2", "manifest": manifest(("a", "conform.emit"))})
        self.assertError(r, -32002)

    def test_exec_errors(self):
        self.prepare(("a", "conform.emit"))
        cases = [
            ({"step_id": "a", "driver": "teleport"}, -32003),
            ({"step_id": "a/b", "driver": "conform.emit"}, -32602),
            ({"driver": "conform.emit"}, -32602),
            ({"step_id": "a", "driver": "conform.emit", "config": "x"}, -32602),
            ({"step_id": "a", "driver": "conform.input", "inputs": {"in": {"from_step": "z", "key": "count"}}}, -32005),
            ({"step_id": "a", "driver": "conform.input", "inputs": {"in": "z"}}, -32602),
        ]
        for params, code in cases:
            notes, r = self.w.call("exec_step", params)
            self.assertError(r, code)
            self.assertEqual(events(notes), [], params)
        self.exec("a", "conform.emit", {"events": 1})
        notes, r = self.exec("b", "conform.input", inputs={"in": {"from_step": "a", "key": "nope"}})
        self.assertError(r, -32005)
        self.assertIn("count", r["error"]["message"])

    def test_after_cleanup(self):
        self.prepare(("a", "conform.emit"))
        _, r = self.w.call("cleanup", {})
        self.assertEqual(r["result"]["status"], "cleaned")
        for method, params in (("exec_step", {"step_id": "a", "driver": "conform.emit"}), ("cleanup", {}),
                               ("fetch_artifact", {"step_id": "a", "path": "cleaned_config.json", "offset": 0, "length": 0})):
            _, r = self.w.call(method, params)
            self.assertError(r, -32001)
            self.assertIn("after cleanup", r["error"]["message"])


class LifecycleTest(WorkerTest):
    def test_session(self):
        notes, r = self.prepare(("extract", "conform.emit"), ("use", "conform.input"), log_level="info")
        self.assertEqual(r["result"]["status"], "ready")
        self.assertEqual(r["result"]["session_id"], "s1")
        self.assertEqual(r["result"]["drivers_loaded"], ["conform.emit", "conform.input"])
        session_dir = r["result"]["session_dir"]
        self.assertTrue(os.path.isdir(session_dir))
        self.assertEqual([n["method"] for n in notes], ["event", "metric"])
        self.assertEqual(events(notes)[0]["name"], "session_initialized")
        self.assertEqual(events(notes)[0]["data"], {"session_id": "s1", "steps_total": 2})
        self.assertNotIn("step_id", events(notes)[0])
        self.assertEqual(metrics(notes)[0]["value"], 2)
        self.assertEqual(metrics(notes)[0]["name"], "steps_total")

        notes, r = self.exec("extract", "conform.emit", {"events": 3})
        names = [(n["method"], n["params"].get("name")) for n in notes if n["method"] != "heartbeat"]
        self.assertEqual(names, [("event", "step_start"), ("event", "conform_tick"), ("event", "conform_tick"),
                                 ("event", "conform_tick"), ("metric", "rows_processed"), ("metric", "step_duration_ms"),
                                 ("event", "step_complete")])
        for n in notes:
            self.assertEqual(n["params"].get("step_id"), "extract")
            self.assertRegex(n["params"]["timestamp"], TS_RE)
        self.assertEqual(events(notes, "step_start")[0]["data"], {"driver": "conform.emit", "step_number": 1})
        self.assertEqual([e["data"] for e in events(notes, "conform_tick")], [{"i": 0}, {"i": 1}, {"i": 2}])
        self.assertEqual(metrics(notes, "rows_processed")[0]["value"], 3)
        self.assertEqual(metrics(notes, "step_duration_ms")[0]["unit"], "ms")
        done = events(notes, "step_complete")[0]["data"]
        self.assertEqual(done["driver"], "conform.emit")
        self.assertEqual(done["rows_processed"], 3)
        self.assertEqual(done["outputs"], ["count"])
        self.assertIsInstance(done["duration_ms"], (int, float))
        res = r["result"]
        self.assertEqual(res["status"], "complete")
        self.assertEqual(res["step_id"], "extract")
        self.assertEqual(res["rows_processed"], 3)
        self.assertEqual(res["outputs"], {"count": {"type": "int", "value": 3}})
        cleaned = b'{\n  "events": 3\n}\n'
        self.assertEqual(res["artifacts"], [{"path": "cleaned_config.json", "size": len(cleaned),
                                             "sha256": hashlib.sha256(cleaned).hexdigest()}])

        notes, r = self.exec("use", "conform.input", inputs={"in": {"from_step": "extract", "key": "count"}})
        self.assertEqual(events(notes, "step_start")[0]["data"]["step_number"], 2)
        self.assertEqual(events(notes, "conform_input")[0]["data"], {"value": 3})
        self.assertEqual(metrics(notes, "rows_processed"), [], "no rows_processed metric for 0 rows")
        self.assertNotIn("outputs", events(notes, "step_complete")[0]["data"])

        notes, r = self.w.call("cleanup")
        self.assertEqual(events(notes, "session_cleanup")[0]["data"], {"session_id": "s1", "steps_executed": 2, "total_rows": 3})
        self.assertEqual(r["result"], {"status": "cleaned", "session_id": "s1", "steps_executed": 2, "total_rows": 3})
        self.assertFalse(os.path.exists(session_dir))
        self.assertEqual(self.w.close(), 0)

    def test_failure(self):
        self.prepare(("f", "conform.fail"))
        notes, r = self.exec("f", "conform.fail", {"message": "it broke"})
        self.assertError(r, -32004)
        self.assertEqual(r["error"]["data"]["step_id"], "f")
        self.assertEqual(r["error"]["data"]["error_type"], "conform_failure")
        self.assertEqual(r["error"]["data"]["message"], "it broke")
        self.assertEqual([a["path"] for a in r["error"]["data"]["artifacts"]], ["cleaned_config.json"])
        failed = events(notes, "step_failed")[0]
        self.assertEqual(failed["step_id"], "f")
        self.assertEqual(failed["data"]["driver"], "conform.fail")
        self.assertEqual(failed["data"]["error_type"], "conform_failure")
        self.assertEqual(failed["data"]["message"], "it broke")
        self.assertIn("duration_ms", failed["data"])
        self.assertEqual(events(notes, "step_complete"), [])
        self.assertNotIn("Traceback", r["error"]["message"])
        time.sleep(0.1)
        self.assertIn(b"Traceback", self.w.err)
        # The worker goes on.
        notes, r = self.exec("f", "conform.emit", {"events": 0})
        self.assertIn("result", r)
        _, r = self.w.call("cleanup")
        self.assertEqual(r["result"]["steps_executed"], 1)

    def test_same_session_prepare_again(self):
        self.prepare(("a", "conform.emit"))
        self.exec("a", "conform.emit", {"events": 1})
        self.prepare(("a", "conform.emit"), ("b", "conform.input"))
        notes, r = self.exec("b", "conform.input", inputs={"in": {"from_step": "a", "key": "count"}})
        self.assertEqual(events(notes, "conform_input")[0]["data"], {"value": 1})


class CancelTest(WorkerTest):
    def test_cancel_running_step(self):
        self.prepare(("slow", "conform.sleep"))
        id = self.w.request("exec_step", {"step_id": "slow", "driver": "conform.sleep", "config": {"ms": 20000}})
        start = self.w.recv()
        self.assertEqual(start["params"]["name"], "step_start")
        # ping is answered while the step runs
        _, pong = self.w.call("ping", {"data": "busy"})
        self.assertEqual(pong["result"]["echo"], "busy")
        t0 = time.monotonic()
        self.w.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": id}})
        notes, r = self.w.until(id, timeout=5)
        self.assertLess(time.monotonic() - t0, 2)
        self.assertError(r, -32800)
        failed = events(notes, "step_failed")[0]
        self.assertEqual(failed["data"]["error_type"], "cancelled")
        # usable afterwards
        notes, r = self.exec("slow", "conform.sleep", {"ms": 1})
        self.assertIn("result", r)
        # a cancel for an answered or unknown id is ignored
        self.w.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": id}})
        self.w.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": "nope"}})
        self.w.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {}})
        _, r = self.w.call("ping")
        self.assertIn("result", r)

    def test_cancel_queued_request(self):
        self.prepare(("slow", "conform.sleep"), ("q", "conform.emit"))
        slow = self.w.request("exec_step", {"step_id": "slow", "driver": "conform.sleep", "config": {"ms": 20000}})
        self.assertEqual(self.w.recv()["params"]["name"], "step_start")
        queued = self.w.request("exec_step", {"step_id": "q", "driver": "conform.emit", "config": {"events": 1}}, id="q-1")
        self.w.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": queued}})
        notes, r = self.w.until(queued, timeout=3)
        self.assertError(r, -32800)
        self.assertEqual(events(notes), [])
        self.w.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": slow}})
        notes, r = self.w.until(slow, timeout=5)
        self.assertError(r, -32800)
        # the queued step never ran
        self.assertEqual([e for e in events(notes) if e.get("step_id") == "q"], [])
        notes, r = self.w.call("cleanup")
        self.assertEqual(r["result"]["steps_executed"], 0)

    def test_emit_raises_once_cancelled(self):
        self.restart(write_test_worker())
        self.prepare(("b", "busy"))
        id = self.w.request("exec_step", {"step_id": "b", "driver": "busy"})
        for _ in range(3):
            self.assertEqual(self.w.recv()["method"], "event")
        self.w.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": id}})
        notes, r = self.w.until(id, timeout=5)
        self.assertError(r, -32800)
        self.assertEqual(events(notes, "step_failed")[0]["data"]["error_type"], "cancelled")
        time.sleep(0.1)
        self.assertIn(b"busy stopped at", self.w.err)


_script = None


class HostEventNameTest(WorkerTest):
    def test_host_names_refused(self):
        # Section 6.1: a worker never sends the host's own event names.
        self.restart(write_test_worker())
        self.prepare(("h", "host_name"))
        notes, r = self.exec("h", "host_name")
        self.assertIn("result", r)
        names = [e["name"] for e in events(notes)]
        self.assertEqual(names, ["step_start", "refused", "refused", "refused", "step_complete"])
        self.assertEqual([e["data"]["name"] for e in events(notes, "refused")], ["run_complete", "step_timeout", ""])


class CancelOwnErrorTest(WorkerTest):
    def test_own_error_after_cancel_is_cancelled(self):
        # A driver that fails in its own way once cancelled was cancelled
        # (protocol section 7): step_failed and the -32800 both say so.
        self.restart(write_test_worker())
        self.prepare(("o", "own_error"))
        id = self.w.request("exec_step", {"step_id": "o", "driver": "own_error"})
        self.assertEqual(self.w.recv()["params"]["name"], "step_start")
        self.assertEqual(self.w.recv()["params"]["name"], "waiting")
        self.w.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": id}})
        notes, r = self.w.until(id, timeout=5)
        self.assertError(r, -32800)
        self.assertEqual(r["error"]["data"]["error_type"], "cancelled")
        self.assertEqual(events(notes, "step_failed")[0]["data"]["error_type"], "cancelled")


def write_test_worker():
    global _script
    if _script is None:
        d = tempfile.mkdtemp(prefix="tproxy-py-test-")
        _script = os.path.join(d, "test_worker.py")
        with open(_script, "w") as f:
            f.write(TEST_WORKER)
    return _script


class BadInputTest(WorkerTest):
    def test_garbage(self):
        w = self.w
        cases = [
            (b"this is not json\n", -32700, None),
            (b"\xff\xfe{}\n", -32700, None),
            (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"data":"\xc3"}}\n', -32700, None),
            (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":NaN}\n', -32700, None),
            (b"[1,2]\n", -32600, None),
            (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]\n', -32600, None),
            (b"42\n", -32600, None),
            (b'"str"\n', -32600, None),
            (b'{"jsonrpc":"1.0","id":9,"method":"ping"}\n', -32600, 9),
            (b'{"id":"x","method":"ping"}\n', -32600, "x"),
            (b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}\n', -32600, None),
            (b'{"jsonrpc":"2.0","id":true,"method":"ping"}\n', -32600, None),
            (b'{"jsonrpc":"2.0","id":null,"method":"ping"}\n', -32600, None),
            (b'{"jsonrpc":"2.0","id":7}\n', -32600, 7),
            (b'{"jsonrpc":"2.0","id":8,"method":3}\n', -32600, 8),
            (b'{"jsonrpc":"2.0","id":11,"method":"no_such"}\n', -32601, 11),
            (b'{"jsonrpc":"2.0","id":12,"method":"prepare","params":[1]}\n', -32602, 12),
        ]
        for raw, code, id in cases:
            w.send_raw(raw)
            r = w.recv()
            self.assertEqual(r.get("id", "absent"), id, raw)
            self.assertError(r, code)
            self.assertNotIn("data", r["error"])
        # Ignored: blank lines, responses, unknown notifications, malformed cancels.
        w.send_raw(b"\n   \n\t\r\n")
        w.send_raw(b'{"jsonrpc":"2.0","id":99,"result":{}}\n')
        w.send_raw(b'{"jsonrpc":"2.0","id":98,"error":{"code":1,"message":"x"}}\n')
        w.send_raw(b'{"jsonrpc":"2.0","method":"whatever","params":{}}\n')
        w.send_raw(b'{"jsonrpc":"2.0","method":"$/cancelRequest","params":[1]}\n')
        w.send_raw(b'{"jsonrpc":"2.0","method":"ping"}\n')
        # CRLF and unknown members are fine.
        w.send_raw(b'{"jsonrpc":"2.0","id":100,"method":"ping","extra":1,"params":{"data":"ok","x":[]}}\r\n')
        r = w.recv()
        self.assertEqual(r["id"], 100)
        self.assertEqual(r["result"]["echo"], "ok")
        self.assertEqual(w.close(), 0)

    def test_split_writes(self):
        msg = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"data": "héllo ✓"}}).encode("utf-8")
        msg = msg.replace(b"\\u00e9", "é".encode()).replace(b"\\u2713", "✓".encode())
        for i in range(len(msg)):
            self.w.send_raw(msg[i:i + 1])
        self.w.send_raw(b"\n")
        r = self.w.recv()
        self.assertEqual(r["result"]["echo"], "héllo ✓")


class OversizeTest(WorkerTest):
    env = {"TPROXY_MAX_FRAME_SIZE": "1024"}

    def test_oversize_frame(self):
        self.w.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"data":"' + b"x" * 100000 + b'"}}\n')
        r = self.w.recv()
        self.assertIsNone(r["id"])
        self.assertError(r, -32600)
        # at the cap exactly: accepted
        head = b'{"jsonrpc":"2.0","id":2,"method":"ping","pad":"'
        tail = b'"}'
        line = head + b"y" * (1024 - len(head) - len(tail)) + tail
        self.assertEqual(len(line), 1024)
        self.w.send_raw(line + b"\r\n")
        r = self.w.recv()
        self.assertEqual(r["id"], 2)
        self.assertIn("result", r)
        self.w.send_raw(line[:-2] + b'y"}\n')  # one over
        r = self.w.recv()
        self.assertError(r, -32600)
        _, r = self.w.call("ping", id=3)
        self.assertEqual(r["result"]["status"], "pong")
        # an oversize final line without newline at EOF
        self.w.send_raw(b"z" * 5000)
        self.assertEqual(self.w.close(), 0)
        r = self.w.recv()
        self.assertError(r, -32600)


class OversizeOutTest(WorkerTest):
    env = {"TPROXY_MAX_FRAME_SIZE": "2048"}

    def setUp(self):
        self.script = write_test_worker()
        super().setUp()

    def test_event_over_cap_raises(self):
        self.prepare(("b", "big"))
        notes, r = self.exec("b", "big", {"n": 10000})
        self.assertError(r, -32004)
        self.assertEqual(r["error"]["data"]["error_type"], "driver")
        notes, r = self.exec("b", "big", {"n": 10})
        self.assertIn("result", r)


class HeartbeatTest(WorkerTest):
    env = {"TPROXY_HEARTBEAT_INTERVAL_MS": "50"}

    def test_heartbeats_while_busy(self):
        time.sleep(0.2)
        self.prepare(("slow", "conform.sleep"))
        notes, r = self.exec("slow", "conform.sleep", {"ms": 400})
        self.assertIn("result", r)
        beats = [n["params"] for n in notes if n["method"] == "heartbeat"]
        self.assertGreaterEqual(len(beats), 4, notes)
        for b in beats:
            self.assertEqual(b.get("step_id"), "slow")
            self.assertRegex(b["timestamp"], TS_RE)
        # idle: no heartbeats
        time.sleep(0.3)
        self.assertTrue(self.w.q.empty(), "heartbeats while idle")


class ArtifactTest(WorkerTest):
    def test_artifacts_and_fetch(self):
        self.prepare(("art", "conform.artifacts"))
        big = "".join(chr(ord("a") + i % 26) for i in range(3 * 1024 * 1024 + 17))
        files = {"b.txt": "hello ✓", "a/deep/c.txt": "", "big.bin": big}
        notes, r = self.exec("art", "conform.artifacts", {"files": files})
        arts = r["result"]["artifacts"]
        self.assertEqual([a["path"] for a in arts], ["a/deep/c.txt", "b.txt", "big.bin", "cleaned_config.json"])
        by = {a["path"]: a for a in arts}
        for path, contents in files.items():
            b = contents.encode()
            self.assertEqual(by[path]["size"], len(b))
            self.assertEqual(by[path]["sha256"], hashlib.sha256(b).hexdigest())
        # fetch big.bin in default (1 MiB) chunks
        got, off = b"", 0
        while True:
            r = self.fetch("art", "big.bin", off, 0)
            chunk = base64.b64decode(r["result"]["data"])
            self.assertLessEqual(len(chunk), 1 << 20)
            got += chunk
            off += len(chunk)
            if r["result"]["eof"]:
                break
            self.assertGreater(len(chunk), 0)
        self.assertEqual(got, big.encode())
        r = self.fetch("art", "b.txt", 2, 3)
        self.assertEqual(base64.b64decode(r["result"]["data"]), "hello ✓".encode()[2:5])
        self.assertFalse(r["result"]["eof"])
        r = self.fetch("art", "a/deep/c.txt", 0, 10)
        self.assertEqual(r["result"], {"data": "", "eof": True})
        r = self.fetch("art", "b.txt", 0, 5 << 20)
        self.assertTrue(r["result"]["eof"])
        _, r = self.w.call("fetch_artifact", {"step_id": "art", "path": "b.txt", "offset": 0.0, "length": 2e0})
        self.assertEqual(base64.b64decode(r["result"]["data"]), b"he")
        for step, path, off, ln in (("art", "../x", 0, 0), ("art", "/etc/passwd", 0, 0), ("art", "a/../b.txt", 0, 0),
                                    ("art", "nope.txt", 0, 0), ("art", "a", 0, 0), ("art", "b.txt", -1, 0),
                                    ("art", "b.txt", 0, -1), ("nostep", "b.txt", 0, 0), ("bad id", "b.txt", 0, 0),
                                    ("art", "b.txt", 1.5, 0), ("art", "", 0, 0), ("art", "a\\b", 0, 0)):
            self.assertError(self.fetch(step, path, off, ln), -32602)
        _, r = self.w.call("fetch_artifact", {"step_id": "art", "path": "b.txt"})
        self.assertError(r, -32602)

    def test_symlinks(self):
        self.restart(write_test_worker())
        self.prepare(("l", "links"))
        notes, r = self.exec("l", "links")
        paths = [a["path"] for a in r["result"]["artifacts"]]
        self.assertEqual(paths, ["cleaned_config.json", "inside_link", "real.txt"])
        refused = {e["data"]["path"]: e["data"]["reason"] for e in events(notes, "artifact_refused")}
        self.assertEqual(sorted(refused), ["dangling", "dirlink", "fifo", "outside_link", "up"])
        for e in events(notes, "artifact_refused"):
            self.assertEqual(e["step_id"], "l")
        r = self.fetch("l", "inside_link")
        self.assertEqual(base64.b64decode(r["result"]["data"]), b"real")
        for p in ("outside_link", "dangling", "dirlink", "fifo", "up/etc/passwd", "sub"):
            self.assertError(self.fetch("l", p), -32602)
        # refused files are reported again on a rerun; cleaned_config.json is
        # rewritten even over a symlink a driver left
        notes, r = self.exec("l", "conform.emit", {"events": 0})
        self.assertEqual(len(events(notes, "artifact_refused")), 5)


class MaskingTest(WorkerTest):
    def setUp(self):
        self.script = write_test_worker()
        super().setUp()

    def test_masking_everywhere(self):
        self.prepare(("e", "echo", {"dsn": "pg://user:s3cr3t@db/x", "password": "hunter22"}),
                     config={"api_token": "tok-123456"}, log_level="debug",
                     secrets={"keys": ["dsn"], "pointers": ["/other"]})
        notes, r = self.exec("e", "echo", {"dsn": "pg://user:s3cr3t@db/x", "password": "hunter22", "other": "ptr-secret",
                                           "note": "has ptr-secret and tok-123456 inside", "fail": True})
        text = json.dumps([notes, r])
        for secret in ("s3cr3t", "hunter22", "ptr-secret", "tok-123456", "pw-attr"):
            self.assertNotIn(secret, text)
        echo = events(notes, "echo")[0]["data"]
        self.assertEqual(echo["config"]["dsn"], tw.MASKED)
        self.assertEqual(echo["config"]["password"], tw.MASKED)
        self.assertEqual(echo["config"]["other"], tw.MASKED)
        self.assertEqual(echo["config"]["note"], "has %s and %s inside" % (tw.MASKED, tw.MASKED))
        self.assertEqual(echo["text"], "dsn is " + tw.MASKED)
        logs = [n["params"] for n in notes if n["method"] == "log"]
        self.assertEqual([l["level"] for l in logs], ["DEBUG", "INFO", "WARN", "ERROR"])
        self.assertEqual(logs[1]["message"], "info " + tw.MASKED)
        self.assertEqual(logs[1]["attrs"], {"k": "v", "password": tw.MASKED})
        self.assertEqual(logs[1]["step_id"], "e")
        m = metrics(notes, "m")[0]
        self.assertEqual(m["tags"], {"token": tw.MASKED, "t": tw.MASKED})
        self.assertEqual(m["unit"], "s")
        self.assertEqual(r["error"]["data"]["message"], "failed with " + tw.MASKED)
        self.assertEqual(r["error"]["data"]["error_type"], "driver")
        self.assertIn(tw.MASKED, r["error"]["message"])
        r = self.fetch("e", "cleaned_config.json")
        cleaned = json.loads(base64.b64decode(r["result"]["data"]))
        self.assertEqual(cleaned, {"dsn": tw.MASKED, "password": tw.MASKED, "other": tw.MASKED, "fail": True,
                                   "note": "has %s and %s inside" % (tw.MASKED, tw.MASKED)})
        time.sleep(0.1)
        self.assertIn(b"Traceback", self.w.err)
        self.assertNotIn(b"s3cr3t", self.w.err)

    def test_log_level(self):
        self.prepare(("e", "echo"), log_level="warn")
        notes, r = self.exec("e", "echo", {"dsn": "x"})
        self.assertEqual([n["params"]["level"] for n in notes if n["method"] == "log"], ["WARN", "ERROR"])


class StepApiTest(WorkerTest):
    def setUp(self):
        self.script = write_test_worker()
        super().setUp()

    def test_outputs_and_inputs(self):
        self.prepare(("o", "outputs"), ("i", "inputs"))
        notes, r = self.exec("o", "outputs")
        self.assertEqual(r["result"]["outputs"], {"t": {"type": "table", "rows": 3}, "l": {"type": "list", "len": 3},
                                                  "s": {"type": "str", "len": 4}, "f": {"type": "float", "value": 1.5},
                                                  "n": {"type": "NoneType", "value": None}})
        self.assertEqual(events(notes, "step_complete")[0]["data"]["outputs"], ["f", "l", "n", "s", "t"])
        notes, r = self.exec("i", "inputs")
        self.assertEqual(events(notes, "v")[0]["data"], {"v": "dflt", "dir": True})
        self.assertError(r, -32004)
        self.assertEqual(r["error"]["data"]["error_type"], "input")
        self.assertEqual(r["error"]["data"]["message"], "step 'i' has no input 'missing' (its inputs: none)")

    def test_custom_methods(self):
        _, r = self.w.call("echo_params", {"a": [1, 2]})
        self.assertEqual(r["result"], {"got": {"a": [1, 2]}})
        _, r = self.w.call("boom")
        self.assertError(r, -32050)
        self.assertEqual(r["error"]["data"], {"why": "test"})
        _, r = self.w.call("crash")
        self.assertError(r, -32603)
        _, r = self.w.call("ping")
        self.assertIn("result", r)

    def test_forward_logging(self):
        self.prepare(("l", "liblog"))
        notes, r = self.exec("l", "liblog")
        logs = [n["params"] for n in notes if n["method"] == "log"]
        self.assertEqual(len(logs), 1, logs)
        self.assertEqual(logs[0]["level"], "WARN")
        self.assertEqual(logs[0]["message"], "library says hi")
        self.assertEqual(logs[0]["step_id"], "l")

    def test_error_type_attribute(self):
        self.prepare(("t", "typed"))
        _, r = self.exec("t", "typed")
        self.assertEqual(r["error"]["data"]["error_type"], "oops_type")
        self.assertEqual(r["error"]["data"]["message"], "typed failure")

    def test_error_categories(self):
        # A failed step's error_type is a category of docs/protocol.md
        # section 7, in the failure and in step_failed alike; never the
        # exception's class name.
        self.prepare(("c", "categories"))
        for raised, want in [("timeout", "timeout"), ("config", "config"),
                             ("untyped_step_error", "driver"), ("oserror", "driver")]:
            notes, r = self.exec("c", "categories", {"raise": raised})
            self.assertError(r, -32004)
            self.assertEqual(r["error"]["data"]["error_type"], want, raised)
            self.assertEqual(events(notes, "step_failed")[0]["data"]["error_type"], want, raised)

    def test_sys_exit_in_driver(self):
        self.prepare(("x", "sysexit"))
        notes, r = self.exec("x", "sysexit")
        self.assertError(r, -32004)
        self.assertEqual(r["error"]["data"]["error_type"], "panic")
        self.assertEqual(events(notes, "step_failed")[0]["data"]["error_type"], "panic")
        self.assertEqual(self.w.p.wait(5), 3)


class StdoutHygieneTest(WorkerTest):
    def test_stdout_kept_off_protocol(self):
        self.prepare(("p", "conform.stdout"))
        notes, r = self.exec("p", "conform.stdout", {"text": "STRAY-OUTPUT"})
        self.assertIn("result", r)
        self.assertEqual(self.w.close(), 0)
        for line in self.w.raw:
            self.assertNotIn(b"STRAY-OUTPUT", line)
            json.loads(line)
        time.sleep(0.1)
        self.assertGreaterEqual(self.w.err.count(b"STRAY-OUTPUT"), 4)


class ShutdownTest(WorkerTest):
    def test_eof_cancels_running_and_queued_requests(self):
        # Protocol section 8, "End of input": the step running is cancelled
        # (step_failed, error_type cancelled, then -32800), the requests
        # queued are answered -32800 without running, and the worker exits 0.
        self.prepare(("slow", "conform.sleep"), ("e", "conform.emit"))
        a = self.w.request("exec_step", {"step_id": "slow", "driver": "conform.sleep", "config": {"ms": 30000}})
        self.assertEqual(self.w.recv()["params"]["name"], "step_start")
        b = self.w.request("exec_step", {"step_id": "e", "driver": "conform.emit", "config": {"events": 2}})
        c = self.w.request("cleanup")
        t0 = time.monotonic()
        self.assertEqual(self.w.close(), 0)
        self.assertLess(time.monotonic() - t0, 5)
        got, events = {}, []
        while True:
            try:
                m = self.w.recv(timeout=1)
            except EOFError:
                break
            if "id" in m:
                got[m["id"]] = m
            elif m.get("method") == "event":
                events.append(m["params"])
        for id in (a, b, c):
            self.assertError(got[id], -32800)
        failed = [e for e in events if e["name"] == "step_failed"]
        self.assertEqual([e["data"]["error_type"] for e in failed], ["cancelled"])
        self.assertNotIn("step_start", [e["name"] for e in events])  # b never ran

    def test_sigterm(self):
        self.prepare(("slow", "conform.sleep"))
        id = self.w.request("exec_step", {"step_id": "slow", "driver": "conform.sleep", "config": {"ms": 30000}})
        self.assertEqual(self.w.recv()["params"]["name"], "step_start")
        t0 = time.monotonic()
        self.w.p.send_signal(signal.SIGTERM)
        code = self.w.p.wait(5)
        self.assertLess(time.monotonic() - t0, 3)
        self.assertEqual(code, 0)
        notes, r = self.w.until(id, timeout=2)
        self.assertError(r, -32800)

    def test_sigterm_stubborn_driver(self):
        self.restart(write_test_worker())
        self.prepare(("s", "stubborn"))
        self.w.request("exec_step", {"step_id": "s", "driver": "stubborn"})
        self.assertEqual(self.w.recv()["params"]["name"], "step_start")
        t0 = time.monotonic()
        self.w.p.send_signal(signal.SIGTERM)
        self.w.p.wait(5)
        self.assertLess(time.monotonic() - t0, 4)


def tearDownModule():
    if _script is not None:
        shutil.rmtree(os.path.dirname(_script), ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
