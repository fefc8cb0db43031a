"""Tests of how a worker process ends and what it leaves behind: the
parent-death signal, the processes drivers left running, session
directories (the stale ones swept), and the session's stop on every exit
path. The same rules as the Go runtime's (worker/procs_linux.go,
worker/sessiondir_unix.go, worker/exit_test.go).

    python3 -m unittest discover -s workers/python -v
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import tproxy_worker as tw  # noqa: E402
from test_tproxy_worker import Proc, events  # noqa: E402

ORPHAN_WORKER = os.path.join(HERE, "testdata", "orphan_worker.py")
LINUX = sys.platform.startswith("linux") and os.path.isdir("/proc/self")
HANG = 10.0  # a hang guard, not a bound on how long things take

# A host that starts the worker script HOST_WORKER names, in a process
# group of its own (as transport.Subprocess does) but with no parent-death
# signal, its stdin, stdout and stderr the host's own, which the test
# holds: the worker's input does not end when the host dies. With
# HOST_THREAD set it starts the worker from a thread that exits on SIGUSR1,
# then says so.
HOST = textwrap.dedent('''
    import os, signal, subprocess, sys, threading, time
    go = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *a: go.set())
    def start():
        subprocess.Popen([sys.executable, os.environ["HOST_WORKER"]], start_new_session=True)
        if os.environ.get("HOST_THREAD"):
            go.wait()
    t = threading.Thread(target=start)
    t.start()
    t.join()
    if os.environ.get("HOST_THREAD"):
        os.write(2, b"host: the thread that started the worker exited\\n")
    time.sleep(600)
''')


def proc_state(pid):
    """The state letter of pid ('Z' for a zombie), or None once gone."""
    st = tw._read_stat(pid)
    return None if st is None else st.state


def dead(pid):
    return proc_state(pid) in (None, "Z", "X")


def wait_dead(pids, timeout=HANG):
    """Wait until every pid is dead; return how long it took, or None."""
    t0 = time.monotonic()
    while not all(dead(p) for p in pids):
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(0.005)
    return time.monotonic() - t0


def kill_all(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def stat_line(pid, comm, state, ppid, pgrp, flags):
    """A /proc/<pid>/stat line."""
    return ("%d (%s) %s %d %d %d 0 -1 %d 0 0 0 0 1 2 3 4 20 0 1 0 5 6 7"
            % (pid, comm, state, ppid, pgrp, pgrp, flags)).encode()


# ---------------------------------------------------------------------------
# The pure pieces


class StatTest(unittest.TestCase):
    def test_parse_stat(self):
        st = tw._parse_stat(42, stat_line(42, "a) (b c)) S", "S", 7, 42, 0x404))
        self.assertEqual(st, tw._ProcStat(42, 7, 42, "S", 0x404))
        self.assertTrue(st.flags & tw._PF_EXITING)
        for bad in (b"", b"42 no parenthesis", b"42 (x) S 1", b"42 (x) SS 1 2 3 4 5 6", b"42 (x) S one 2 3 4 5 6"):
            self.assertIsNone(tw._parse_stat(42, bad), bad)

    @unittest.skipUnless(LINUX, "no /proc")
    def test_read_stat_and_parent_alive(self):
        st = tw._read_stat(os.getpid())
        self.assertEqual((st.ppid, st.pgrp, st.state), (os.getppid(), os.getpgrp(), "R"))
        self.assertTrue(tw._parent_alive(os.getppid()))
        self.assertFalse(tw._parent_alive(os.getppid() + 1))  # not the parent
        self.assertIsNone(tw._read_stat(-1))


class ParentDeathTest(unittest.TestCase):
    def setUp(self):
        tw._prctl_fn = None
        self.addCleanup(setattr, tw, "_prctl_fn", None)

    def test_fails_soft_without_prctl(self):
        # macOS, Windows: nothing to arm, nothing installed, no error.
        installed = []
        with mock.patch.object(tw.sys, "platform", "darwin"):
            self.assertIsNone(tw._prctl())
            self.assertIsNone(tw._parent_death_signal())
            self.assertFalse(tw._set_parent_death_signal(signal.SIGHUP))
            self.assertFalse(tw._arm_parent_death(lambda: installed.append(1)))
        self.assertEqual(installed, [])

    @unittest.skipUnless(LINUX, "prctl is Linux's")
    def test_arms_only_when_none_is_set(self):
        # In a process of its own: the parent-death signal is the process's.
        script = textwrap.dedent('''
            import json, signal, sys
            sys.path.insert(0, %r)
            import tproxy_worker as tw
            out = {"before": tw._parent_death_signal()}
            if sys.argv[1] == "preset":
                tw._set_parent_death_signal(signal.SIGTERM)
            calls = []
            out["armed"] = tw._arm_parent_death(lambda: calls.append(1) or (lambda: None))
            out["installed"] = len(calls)
            out["after"] = tw._parent_death_signal()
            print(json.dumps(out))
        ''' % HERE)
        for case, want in (("fresh", {"before": 0, "armed": True, "installed": 1, "after": int(signal.SIGHUP)}),
                           ("preset", {"before": 0, "armed": False, "installed": 0, "after": int(signal.SIGTERM)})):
            out = subprocess.run([sys.executable, "-c", script, case], stdout=subprocess.PIPE, check=True, timeout=HANG).stdout
            self.assertEqual(json.loads(out), want, case)

    @unittest.skipUnless(LINUX, "prctl is Linux's")
    def test_install_undone_when_arming_fails(self):
        undone = []
        with mock.patch.object(tw, "_parent_death_signal", return_value=0), \
                mock.patch.object(tw, "_set_parent_death_signal", return_value=False):
            self.assertFalse(tw._arm_parent_death(lambda: lambda: undone.append(1)))
        self.assertEqual(undone, [1])


@unittest.skipIf(tw.fcntl is None, "no flock")
class SweepTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="tproxy-py-sweep-")
        self.addCleanup(shutil.rmtree, self.root, True)

    def test_sweep_stale_removes_only_dead_old_dirs(self):
        import fcntl
        now = time.time()
        old, recent = now - tw._STALE_AGE - 3600, now - 3600
        cases = [  # name, dir, owner file, its mtime, locked, removed
            ("old, owner gone", "tproxy-a-1", "file", old, False, True),
            ("old, owner alive", "tproxy-b-1", "file", old, True, False),
            ("recent, owner gone", "tproxy-c-1", "file", recent, False, False),
            ("no owner file", "tproxy-d-1", "", old, False, False),
            ("owner file is a symlink", "tproxy-e-1", "symlink", old, False, False),
            ("not a session directory", "other-f-1", "file", old, False, False),
        ]
        held = []
        self.addCleanup(lambda: [os.close(fd) for fd in held])
        for name, d, owner, mtime, locked, _ in cases:
            d = os.path.join(self.root, d)
            os.mkdir(d)
            with open(os.path.join(d, "data"), "w") as f:
                f.write("x")
            path = os.path.join(d, tw._OWNER_FILE)
            if owner == "file":
                with open(path, "w") as f:
                    f.write("pid 1\n")
                os.utime(path, (mtime, mtime))
            elif owner == "symlink":
                target = d + "-target"
                open(target, "w").close()
                os.utime(target, (mtime, mtime))
                os.symlink(target, path)
            if locked:  # a live owner: this process, on another open file
                fd = os.open(path, os.O_RDONLY)
                held.append(fd)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        tw._sweep_stale(self.root, now)
        for name, d, _, _, _, removed in cases:
            self.assertEqual(not os.path.lexists(os.path.join(self.root, d)), removed, name)

    def test_sweep_due_at_most_hourly(self):
        now = time.time()
        steps = [
            (now, True),  # never swept
            (now + 60, False),
            (now + tw._SWEEP_EVERY - 1, False),
            (now + tw._SWEEP_EVERY, True),
            (now + tw._SWEEP_EVERY + 1, False),
        ]
        for i, (at, want) in enumerate(steps):
            self.assertEqual(tw._sweep_due(self.root, at), want, "step %d" % i)
        # A marker from the future (a clock set back) does not count.
        self.assertTrue(tw._sweep_due(self.root, now - 10 * tw._SWEEP_EVERY))


@unittest.skipUnless(LINUX, "no /proc")
class EndChildrenTest(unittest.TestCase):
    """_end_children, in a process of its own (it kills that process's
    children): a direct child, and a grandchild its shell left behind in
    the process's group."""

    SCRIPT = textwrap.dedent('''
        import json, os, subprocess, sys
        sys.path.insert(0, %r)
        import tproxy_worker as tw
        child = subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL)
        out = subprocess.run(["/bin/sh", "-c", "sleep 60 </dev/null >/dev/null 2>&1 & echo $!"],
                             stdout=subprocess.PIPE, check=True).stdout
        grandchild = int(out.split()[0])
        ppid = os.getppid() if sys.argv[1] == "parent alive" else -1
        killed = tw._end_children(ppid)
        print(json.dumps({"child": child.pid, "grandchild": grandchild, "killed": killed,
                          "leader": os.getpgrp() == os.getpid()}))
    ''' % HERE)

    def run_case(self, case, leader):
        out = subprocess.run([sys.executable, "-c", self.SCRIPT, case], stdout=subprocess.PIPE,
                             start_new_session=leader, check=True, timeout=HANG).stdout
        got = json.loads(out)
        self.addCleanup(kill_all, [got["child"], got["grandchild"]])
        self.assertEqual(got["leader"], leader)
        return got

    def test_not_leader_ends_its_children_only(self):
        # Someone else's group is never signalled: the grandchild, no
        # child of the worker, is in the test's group.
        got = self.run_case("parent alive", leader=False)
        self.assertEqual(got["killed"], 1)
        self.assertIsNotNone(wait_dead([got["child"]]))
        self.assertFalse(dead(got["grandchild"]))

    def test_leader_with_parent_alive_leaves_it_to_the_host(self):
        got = self.run_case("parent alive", leader=True)
        self.assertEqual(got["killed"], 0)
        self.assertFalse(dead(got["child"]) or dead(got["grandchild"]))

    def test_leader_with_parent_gone_ends_its_group(self):
        got = self.run_case("parent gone", leader=True)
        self.assertEqual(got["killed"], 2)
        self.assertIsNotNone(wait_dead([got["child"], got["grandchild"]]))

    def test_no_proc_does_nothing(self):
        with mock.patch.object(tw.os.path, "isdir", return_value=False):
            self.assertEqual(tw._end_children(os.getppid()), 0)


# ---------------------------------------------------------------------------
# A worker process's ends


@unittest.skipUnless(LINUX, "the parent-death signal and /proc are Linux's")
class ExitTest(unittest.TestCase):
    """A worker process (testdata/orphan_worker.py) stopped mid-step every
    way it can be: what the host reads, and what is left."""

    def setUp(self):
        self.pids = []
        self.addCleanup(lambda: kill_all(self.pids))

    def start(self, env=None, via_host=False):
        """Start the worker, directly or under HOST; return the Proc whose
        stdin and stdout are the worker's (w.p is the host, if any)."""
        env = dict(env or {})
        script = ORPHAN_WORKER
        if via_host:
            d = tempfile.mkdtemp(prefix="tproxy-py-host-")
            self.addCleanup(shutil.rmtree, d, True)
            script = os.path.join(d, "host.py")
            with open(script, "w") as f:
                f.write(HOST)
            env["HOST_WORKER"] = ORPHAN_WORKER
        w = Proc(script, env)
        self.addCleanup(w.dispose)
        return w

    def prepare(self, w, driver):
        notes, r = w.call("prepare", {"session_id": "x", "manifest": {"steps": [{"id": "s", "driver": driver}]}})
        self.assertIn("result", r, r)
        return r["result"]["session_dir"]

    def run_until(self, w, driver, event, config=None):
        """Start the step and wait for its event; return (id, event data)."""
        id = w.request("exec_step", {"step_id": "s", "driver": driver, "config": config or {}})
        while True:
            m = w.recv()
            if m.get("method") == "event" and m["params"]["name"] == event:
                data = m["params"].get("data", {})
                self.pids += [p for k, p in data.items() if k in ("worker", "child", "grandchild")]
                return id, data

    def answer(self, w, id):
        notes, r = w.until(id, timeout=HANG)
        self.assertIn("error", r, r)
        self.assertEqual(r["error"]["code"], tw.REQUEST_CANCELLED, r)
        self.assertEqual([e["data"]["error_type"] for e in events(notes, "step_failed")], ["cancelled"])
        return r["error"]["message"]

    def wait_err(self, w, text):
        """Wait until the worker's stderr (read by a thread) holds text."""
        deadline = time.monotonic() + HANG
        while text not in w.err:
            self.assertLess(time.monotonic(), deadline, "stderr has no %r:\n%s" % (text, w.err.decode(errors="replace")))
            time.sleep(0.01)

    def assertNothingLeft(self, w, session_dir, pids):
        took = wait_dead(pids)
        self.assertIsNotNone(took, "still running %g s later: %s" % (HANG, [p for p in pids if not dead(p)]))
        self.assertFalse(os.path.lexists(session_dir), "the session directory is left behind")
        left = [n for n in os.listdir(w.work) if n.startswith(tw._DIR_PREFIX)]
        self.assertEqual(left, [])
        return took

    def test_parent_death_signal(self):
        # The host dies while the worker's input stays open (the test holds
        # it): only the parent-death signal the worker armed can stop it.
        w = self.start(via_host=True)
        session_dir = self.prepare(w, "spawn")
        id, data = self.run_until(w, "spawn", "spawned", {"grandchild": True})
        t0 = time.monotonic()
        w.p.kill()
        self.assertNothingLeft(w, session_dir, [data["worker"], data["child"], data["grandchild"]])
        took = time.monotonic() - t0
        # A figure, not a bound: the acceptance is 1 s, the machine noisy.
        sys.stderr.write("[gone %.0f ms after the host's SIGKILL] " % (took * 1000))
        self.assertIn("parent process died", self.answer(w, id))

    def test_parent_thread_exit_is_not_parent_death(self):
        # The thread that started the worker exits; the host lives on, and
        # so does the session.
        w = self.start(env={"HOST_THREAD": "1"}, via_host=True)
        self.prepare(w, "block")  # serving: the signal is armed
        os.kill(w.p.pid, signal.SIGUSR1)
        self.wait_err(w, b"the thread that started the worker exited")
        self.wait_err(w, b"parent-death signal with the parent process alive; ignored")
        id, data = self.run_until(w, "block", "blocked")
        w.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": id}})
        self.assertEqual(self.answer(w, id), "exec_step cancelled by the host")

    def test_eof_ends_the_child_left_behind(self):
        w = self.start()
        session_dir = self.prepare(w, "spawn")
        id, data = self.run_until(w, "spawn", "spawned", {"leave": True})
        w.p.stdin.close()
        self.assertIn("the host closed the worker's input", self.answer(w, id))
        self.assertEqual(w.p.wait(HANG), 0)
        self.assertNothingLeft(w, session_dir, [data["child"]])

    def test_epipe_stops_the_session(self):
        # The host stops reading but keeps the worker's input open: the
        # next write (a heartbeat) fails, and the session stops there.
        # (Read here, not by Proc's thread, whose read would hold the pipe.)
        work = tempfile.mkdtemp(prefix="tproxy-py-work-")
        self.addCleanup(shutil.rmtree, work, True)
        errf = tempfile.TemporaryFile()
        self.addCleanup(errf.close)
        env = dict(os.environ, TPROXY_WORK_DIR=work, TPROXY_HEARTBEAT_INTERVAL_MS="50")
        p = subprocess.Popen([sys.executable, ORPHAN_WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=errf, env=env)
        self.pids.append(p.pid)
        self.addCleanup(p.stdin.close)

        def send(obj):
            p.stdin.write(json.dumps(obj).encode() + b"\n")
            p.stdin.flush()

        def until(pred):
            while True:
                line = p.stdout.readline()
                self.assertTrue(line, "the worker's output ended")
                m = json.loads(line)
                if pred(m):
                    return m

        send({"jsonrpc": "2.0", "id": 1, "method": "prepare",
              "params": {"session_id": "x", "manifest": {"steps": [{"id": "s", "driver": "spawn"}]}}})
        session_dir = until(lambda m: m.get("id") == 1)["result"]["session_dir"]
        send({"jsonrpc": "2.0", "id": 2, "method": "exec_step",
              "params": {"step_id": "s", "driver": "spawn", "config": {"leave": True}}})
        child = until(lambda m: m.get("method") == "event" and m["params"]["name"] == "spawned")["params"]["data"]["child"]
        self.pids.append(child)
        p.stdout.close()
        self.assertEqual(p.wait(HANG), 1)
        self.assertIsNotNone(wait_dead([child]), "the child outlived the worker")
        self.assertFalse(os.path.lexists(session_dir), "the session directory is left behind")
        errf.seek(0)
        self.assertIn(b"writing to the host failed", errf.read())

    def test_sigterm_stuck_driver_leaves_nothing(self):
        # The driver ignores the cancellation: after the stop grace the
        # worker exits under it, unanswered, its directory and child gone.
        w = self.start()
        session_dir = self.prepare(w, "stuck")
        id, data = self.run_until(w, "stuck", "spawned")
        w.p.send_signal(signal.SIGTERM)
        self.assertEqual(w.p.wait(HANG), 0)
        self.assertNothingLeft(w, session_dir, [data["child"]])
        self.wait_err(w, b"abandoning it")

    @unittest.skipIf(tw.fcntl is None, "no flock")
    def test_session_dir_locked_and_stale_swept(self):
        import fcntl
        w = self.start()
        old = time.time() - 2 * tw._STALE_AGE
        stale, recent = os.path.join(w.work, "tproxy-dead-1"), os.path.join(w.work, "tproxy-recent-1")
        for d, mtime in ((stale, old), (recent, time.time())):
            os.mkdir(d)
            owner = os.path.join(d, tw._OWNER_FILE)
            open(owner, "w").close()
            os.utime(owner, (mtime, mtime))
        session_dir = self.prepare(w, "block")
        self.assertFalse(os.path.lexists(stale), "the stale directory survived the first prepare")
        self.assertTrue(os.path.isdir(recent))
        self.assertTrue(os.path.basename(session_dir).startswith("tproxy-x-"))
        fd = os.open(os.path.join(session_dir, tw._OWNER_FILE), os.O_RDONLY)
        try:
            with self.assertRaises(BlockingIOError):  # its worker holds it
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        self.assertEqual(w.close(), 0)
        self.assertFalse(os.path.lexists(session_dir))


if __name__ == "__main__":
    unittest.main()
