#!/usr/bin/env python3
"""A tproxy worker in Python (stdlib only) for the conformance kit's tests.

With --faults=none it implements docs/protocol.md as written: it is the
kit's second, independent implementation, and passes every check. By
default it gets a few things wrong on purpose (FAULTS below), each caught
by exactly one check; worker/conform's TestBrokenWorker asserts the list.

    python3 broken_worker.py                 # the default faults
    python3 broken_worker.py --faults=none   # a conforming worker
    python3 broken_worker.py --faults=no_heartbeat,stdout_leak
"""

import base64
import datetime
import hashlib
import json
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time

FAULTS = {
    # ping answers with the protocol the host's params name, not its own.
    "version_echo",
    # step_complete is sent after the exec_step response, not before.
    "late_complete",
    # conform.input's event carries an epoch number as its timestamp.
    "epoch_timestamp",
    # a line that is not JSON makes the worker exit.
    "garbage_exit",
    # no heartbeats, however long a step runs.
    "no_heartbeat",
    # fetch_artifact serves any path, "../x" included.
    "fetch_traversal",
    # the protocol stays on fd 1, so print() corrupts it.
    "stdout_leak",
}

PROTOCOL = 1
MAX_FRAME = 16 << 20
CHUNK = 1 << 20
HEARTBEAT_SECONDS = 1.0
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LEVELS = {"debug", "info", "warn", "error"}
DRIVERS = sorted(["conform.emit", "conform.sleep", "conform.fail",
                  "conform.artifacts", "conform.stdout", "conform.input"])


def parse_args(argv):
    faults = set(FAULTS)
    for a in argv:
        if a.startswith("--faults="):
            v = a[len("--faults="):]
            faults = set() if v in ("", "none") else set(v.split(","))
            unknown = faults - FAULTS
            if unknown:
                sys.exit("unknown faults: %s" % ", ".join(sorted(unknown)))
        else:
            sys.exit("usage: broken_worker.py [--faults=none|f1,f2,...]")
    return faults


def now():
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


class RPCError(Exception):
    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class Cancelled(Exception):
    pass


class ConformFailure(Exception):
    error_type = "conform_failure"


def invalid(msg):
    return RPCError(-32602, "invalid params: " + msg)


def is_int(v):
    return (isinstance(v, int) and not isinstance(v, bool)) or \
        (isinstance(v, float) and v.is_integer())


def check_id(kind, v):
    if not isinstance(v, str) or not ID_RE.match(v):
        raise invalid("%s %r is not an id" % (kind, v))
    return v


def clean_path(p):
    if not isinstance(p, str) or p == "" or "\\" in p or "\x00" in p or p.startswith("/"):
        return False
    return all(e not in ("", ".", "..") for e in p.split("/"))


def reject_constant(name):
    raise ValueError("%s is not JSON" % name)


class Conn:
    """The protocol channel: a private copy of fd 1, written whole lines at a time."""

    def __init__(self, faults):
        if "stdout_leak" in faults:
            self.fd = 1
        else:
            # stdout hygiene (§2): the protocol moves to a private fd, and
            # fd 1 (print, C code) now points at stderr.
            self.fd = os.dup(1)
            os.dup2(2, 1)
            sys.stdout = sys.stderr
        self.lock = threading.Lock()

    def send(self, msg):
        b = (json.dumps(msg, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        with self.lock:
            while b:
                n = os.write(self.fd, b)
                b = b[n:]

    def notify(self, method, params):
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def reply(self, id_, result=None, error=None):
        msg = {"jsonrpc": "2.0", "id": id_}
        if error is not None:
            e = {"code": error.code, "message": error.message}
            if error.data is not None:
                e["data"] = error.data
            msg["error"] = e
        else:
            msg["result"] = result
        self.send(msg)


class Step:
    def __init__(self, worker, step_id, config, inputs, art_dir, cancelled):
        self.worker, self.id, self.config, self.inputs = worker, step_id, config, inputs
        self.artifact_dir, self.cancelled = art_dir, cancelled
        self.rows, self.outputs = 0, {}

    def event(self, name, data, timestamp=None):
        if self.cancelled.is_set():
            raise Cancelled("cancelled")
        self.worker.conn.notify("event", {"name": name, "timestamp": timestamp or now(),
                                          "step_id": self.id, "data": data})

    def config_int(self, key):
        v = self.config.get(key)
        if not is_int(v) or v < 0:
            raise ValueError("config %r must be a non-negative integer" % key)
        return int(v)


# The conformance drivers of §13.

def d_emit(s):
    n = s.config_int("events")
    for i in range(n):
        s.event("conform_tick", {"i": i})
    s.rows = n
    s.outputs["count"] = n


def d_sleep(s):
    if s.cancelled.wait(s.config_int("ms") / 1000.0):
        raise Cancelled("cancelled")


def d_fail(s):
    raise ConformFailure(s.config.get("message", ""))


def d_artifacts(s):
    for name, content in sorted((s.config.get("files") or {}).items()):
        if not clean_path(name):
            raise ValueError("bad artifact path %r" % name)
        p = os.path.join(s.artifact_dir, *name.split("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(content.encode("utf-8"))


def d_stdout(s):
    text = s.config.get("text", "")
    print(text)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    os.write(1, (text + "\n").encode("utf-8"))


def d_input(s):
    if "in" not in s.inputs:
        raise ValueError('input "in" is missing')
    ts = time.time() if "epoch_timestamp" in s.worker.faults else None
    s.event("conform_input", {"value": s.inputs["in"]}, timestamp=ts)


DRIVER_FUNCS = {"conform.emit": d_emit, "conform.sleep": d_sleep, "conform.fail": d_fail,
                "conform.artifacts": d_artifacts, "conform.stdout": d_stdout,
                "conform.input": d_input}


class Worker:
    def __init__(self, faults):
        self.faults = faults
        self.conn = Conn(faults)
        self.jobs = queue.Queue()
        self.lock = threading.Lock()
        self.inflight = {}  # id key -> threading.Event
        self.session = None
        self.prepared = False
        self.dir = None
        self.attempts = self.executed = self.total_rows = 0
        self.outputs = {}

    # Reading (§2, §12): own line reader with a cap; ping and cancel at once.

    def read_loop(self):
        buf = bytearray()  # extended in place: a long line costs no quadratic copying
        over = 0
        while True:
            chunk = os.read(0, 65536)
            if not chunk:
                break
            while chunk:
                i = chunk.find(b"\n")
                part = chunk if i < 0 else chunk[:i]
                if over:
                    over += len(part)
                elif len(buf) + len(part) > MAX_FRAME + 1:
                    over, buf = len(buf) + len(part), bytearray()
                else:
                    buf += part
                if i < 0:
                    break
                chunk = chunk[i + 1:]
                if over:
                    over = 0
                    self.conn.reply(None, error=RPCError(-32600, "invalid request: frame over the cap"))
                else:
                    line, buf = bytes(buf), bytearray()
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    if len(line) > MAX_FRAME:
                        self.conn.reply(None, error=RPCError(-32600, "invalid request: frame over the cap"))
                    else:
                        self.handle_line(line)
        # The end of the input cancels what was received (§8): the request
        # running stops, those queued are answered -32800 without running.
        with self.lock:
            for ev in self.inflight.values():
                ev.set()
        self.jobs.put(None)

    def handle_line(self, line):
        if not line.strip():
            return
        try:
            msg = json.loads(line.decode("utf-8"), parse_constant=reject_constant)
        except (UnicodeDecodeError, ValueError) as e:
            if "garbage_exit" in self.faults:
                os._exit(1)
            self.conn.reply(None, error=RPCError(-32700, "parse error: %s" % e))
            return
        if not isinstance(msg, dict):
            self.conn.reply(None, error=RPCError(-32600, "invalid request: not an object"))
            return
        has_id = "id" in msg
        id_ = msg.get("id")
        good_id = isinstance(id_, str) or (isinstance(id_, (int, float)) and not isinstance(id_, bool))
        if msg.get("jsonrpc") != "2.0":
            self.conn.reply(id_ if good_id else None, error=RPCError(-32600, 'invalid request: jsonrpc must be "2.0"'))
            return
        if "method" not in msg:
            if "result" in msg or "error" in msg:
                return  # a response: the worker sends no requests
            self.conn.reply(id_ if good_id else None, error=RPCError(-32600, "invalid request: no method"))
            return
        method = msg["method"]
        if not isinstance(method, str) or (has_id and not good_id):
            self.conn.reply(id_ if good_id else None, error=RPCError(-32600, "invalid request"))
            return
        params = msg.get("params")
        if not has_id:
            if method == "$/cancelRequest" and isinstance(params, dict):
                cid = params.get("id")
                if isinstance(cid, (str, int, float)) and not isinstance(cid, bool):
                    with self.lock:
                        ev = self.inflight.get(key(cid))
                    if ev is not None:
                        ev.set()
            return
        if method == "ping":
            try:
                self.conn.reply(id_, self.ping(params))
            except RPCError as e:
                self.conn.reply(id_, error=e)
            return
        ev = threading.Event()
        with self.lock:
            self.inflight[key(id_)] = ev
        self.jobs.put((id_, method, params, ev))

    # Executing: one request at a time, in arrival order (§8).

    def exec_loop(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            id_, method, params, ev = job
            stop = threading.Event()
            beat = threading.Thread(target=self.beat, args=(stop,), daemon=True)
            self.beating = None
            if "no_heartbeat" not in self.faults:
                beat.start()
            late = []
            try:
                if ev.is_set():
                    raise RPCError(-32800, "%s cancelled by the host" % method)
                result = self.dispatch(method, params, ev, late)
                self.conn.reply(id_, result)
            except RPCError as e:
                self.conn.reply(id_, error=e)
            finally:
                stop.set()
                with self.lock:
                    self.inflight.pop(key(id_), None)
            for params in late:
                self.conn.notify("event", params)

    def beat(self, stop):
        while not stop.wait(HEARTBEAT_SECONDS):
            p = {"timestamp": now()}
            if self.beating:
                p["step_id"] = self.beating
            self.conn.notify("heartbeat", p)

    def dispatch(self, method, params, ev, late):
        if method == "prepare":
            return self.prepare(params)
        if method == "exec_step":
            return self.exec_step(params, ev, late)
        if method == "cleanup":
            return self.cleanup()
        if method == "fetch_artifact":
            return self.fetch_artifact(params)
        raise RPCError(-32601, "method %r not found" % method)

    def ping(self, params):
        if params is not None and not isinstance(params, dict):
            raise invalid("ping params must be an object")
        params = params or {}
        data = params.get("data", "")
        if data is None:
            data = ""
        if not isinstance(data, str):
            raise invalid("ping data must be a string")
        protocol = PROTOCOL
        if "version_echo" in self.faults and is_int(params.get("protocol")):
            protocol = int(params["protocol"])
        return {"status": "pong", "echo": data, "timestamp": now(), "protocol": protocol,
                "worker": {"name": "conform-python", "version": "0.1.0", "drivers": DRIVERS}}

    def prepare(self, p):
        if not isinstance(p, dict):
            raise invalid("prepare params must be an object")
        sid = check_id("session_id", p.get("session_id"))
        if self.session is not None and sid != self.session:
            raise RPCError(-32002, "this worker serves session %r, not %r" % (self.session, sid))
        m = p.get("manifest")
        if not isinstance(m, dict) or not isinstance(m.get("steps"), list):
            raise invalid("manifest.steps is required")
        seen, drivers = set(), set()
        for st in m["steps"]:
            if not isinstance(st, dict):
                raise invalid("a step must be an object")
            check_id("step id", st.get("id"))
            if st["id"] in seen:
                raise invalid("step id %r repeated" % st["id"])
            seen.add(st["id"])
            d = st.get("driver")
            if not isinstance(d, str):
                raise invalid("step %r has no driver" % st["id"])
            if d not in DRIVER_FUNCS:
                raise RPCError(-32003, "no driver %r" % d)
            drivers.add(d)
        level = p.get("log_level")
        if level is not None and (not isinstance(level, str) or level.lower() not in LEVELS):
            raise invalid("log_level %r" % level)
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="conform-py-")
        self.session, self.prepared = sid, True
        ts = now()
        self.conn.notify("event", {"name": "session_initialized", "timestamp": ts,
                                   "data": {"session_id": sid, "steps_total": len(m["steps"])}})
        self.conn.notify("metric", {"name": "steps_total", "value": len(m["steps"]), "timestamp": ts})
        return {"status": "ready", "session_id": sid, "session_dir": self.dir,
                "drivers_loaded": sorted(drivers)}

    def not_prepared(self, method):
        return RPCError(-32001, "%s before prepare or after cleanup" % method)

    def art_dir(self, step_id):
        return os.path.join(self.dir, "artifacts", step_id)

    def list_artifacts(self, d):
        out = []
        for root, _, files in os.walk(d):
            for f in files:
                full = os.path.join(root, f)
                rel = os.path.relpath(full, d).replace(os.sep, "/")
                with open(full, "rb") as fh:
                    b = fh.read()
                out.append({"path": rel, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()})
        return sorted(out, key=lambda a: a["path"])

    def exec_step(self, p, cancelled, late):
        if not self.prepared:
            raise self.not_prepared("exec_step")
        if not isinstance(p, dict):
            raise invalid("exec_step params must be an object")
        step_id = check_id("step_id", p.get("step_id"))
        driver = p.get("driver")
        if not isinstance(driver, str):
            raise invalid("driver is required")
        config = p.get("config")
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise invalid("config must be an object")
        refs = p.get("inputs") or {}
        if not isinstance(refs, dict):
            raise invalid("inputs must be an object")
        for name, ref in refs.items():
            if not isinstance(ref, dict) or not isinstance(ref.get("key"), str):
                raise invalid("input %r needs from_step and key" % name)
            check_id("from_step", ref.get("from_step"))
        if driver not in DRIVER_FUNCS:
            raise RPCError(-32003, "no driver %r" % driver)
        inputs = {}
        for name, ref in refs.items():
            outs = self.outputs.get(ref["from_step"], {})
            if ref["key"] not in outs:
                raise RPCError(-32005, "input %r: no output %r of step %r" % (name, ref["key"], ref["from_step"]))
            inputs[name] = outs[ref["key"]]
        d = self.art_dir(step_id)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "cleaned_config.json"), "w") as f:
            json.dump(config, f)
        self.attempts += 1
        ts = now()
        self.conn.notify("event", {"name": "step_start", "timestamp": ts, "step_id": step_id,
                                   "data": {"driver": driver, "step_number": self.attempts}})
        self.beating = step_id
        step = Step(self, step_id, config, inputs, d, cancelled)
        start = time.monotonic()
        try:
            DRIVER_FUNCS[driver](step)
            err = None
        except Exception as e:  # a driver's failure fails the step, not the worker
            err = e
        ms = (time.monotonic() - start) * 1000
        arts = self.list_artifacts(d)
        if err is not None:
            etype = getattr(err, "error_type", type(err).__name__)
            if cancelled.is_set():
                etype = "cancelled"
            self.conn.notify("event", {"name": "step_failed", "timestamp": now(), "step_id": step_id,
                                       "data": {"driver": driver, "error_type": etype,
                                                "message": str(err), "duration_ms": ms}})
            if cancelled.is_set():
                raise RPCError(-32800, "exec_step cancelled by the host")
            raise RPCError(-32004, "step %r failed: %s" % (step_id, err),
                           {"step_id": step_id, "error_type": etype, "message": str(err), "artifacts": arts})
        self.executed += 1
        self.total_rows += step.rows
        self.outputs[step_id] = step.outputs
        ts = now()
        if step.rows:
            self.conn.notify("metric", {"name": "rows_processed", "value": step.rows, "timestamp": ts, "step_id": step_id})
        self.conn.notify("metric", {"name": "step_duration_ms", "value": ms, "timestamp": ts,
                                    "step_id": step_id, "unit": "ms"})
        done = {"name": "step_complete", "timestamp": ts, "step_id": step_id,
                "data": {"driver": driver, "rows_processed": step.rows, "duration_ms": ms,
                         "outputs": sorted(step.outputs)}}
        if "late_complete" in self.faults:
            late.append(done)
        else:
            self.conn.notify("event", done)
        return {"status": "complete", "step_id": step_id, "rows_processed": step.rows, "duration_ms": ms,
                "outputs": {k: {"type": type(v).__name__, "value": v} for k, v in step.outputs.items()},
                "artifacts": arts}

    def cleanup(self):
        if not self.prepared:
            raise self.not_prepared("cleanup")
        self.conn.notify("event", {"name": "session_cleanup", "timestamp": now(),
                                   "data": {"session_id": self.session, "steps_executed": self.executed,
                                            "total_rows": self.total_rows}})
        shutil.rmtree(self.dir, ignore_errors=True)
        self.prepared, self.outputs = False, {}
        return {"status": "cleaned", "session_id": self.session, "steps_executed": self.executed,
                "total_rows": self.total_rows}

    def fetch_artifact(self, p):
        if not self.prepared:
            raise self.not_prepared("fetch_artifact")
        if not isinstance(p, dict):
            raise invalid("fetch_artifact params must be an object")
        step_id = check_id("step_id", p.get("step_id"))
        path, offset, length = p.get("path"), p.get("offset"), p.get("length")
        if not isinstance(path, str):
            raise invalid("path is required")
        if not clean_path(path) and "fetch_traversal" not in self.faults:
            raise invalid("path %r is not clean" % path)
        if not is_int(offset) or not is_int(length) or offset < 0 or length < 0:
            raise invalid("offset and length must be integers >= 0")
        offset, length = int(offset), int(length)
        if length == 0 or length > CHUNK:
            length = CHUNK
        full = os.path.join(self.art_dir(step_id), *path.split("/"))
        if not os.path.isfile(full):
            raise invalid("no artifact %r of step %r" % (path, step_id))
        with open(full, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            b = f.read(length)
        return {"data": base64.b64encode(b).decode("ascii"), "eof": offset + len(b) >= size}


def key(id_):
    if isinstance(id_, str):
        return "s:" + id_
    return "n:%r" % (float(id_) if isinstance(id_, float) and not id_.is_integer() else int(id_))


def main():
    faults = parse_args(sys.argv[1:])
    w = Worker(faults)
    ex = threading.Thread(target=w.exec_loop)
    ex.start()
    w.read_loop()  # until the end of the input (§8)
    ex.join()
    if w.dir:
        shutil.rmtree(w.dir, ignore_errors=True)
    sys.stdout.flush()
    sys.exit(0)


if __name__ == "__main__":
    main()
