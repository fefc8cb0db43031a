"""A worker whose drivers start processes, for the tests of how a worker
process ends (orphan_test.go, test_exit.py).

spawn
    starts ``sleep 60`` (the child) and, with config ``grandchild``, a
    ``sleep 60`` that its shell parent leaves behind: reparented, no child
    of the worker, still in its process group. It sends ``spawned`` with
    the pids, then waits for the child, stopping when cancelled: with
    config ``leave`` it returns then and leaves the child running, else it
    kills the child first.
block
    sends ``blocked`` (with its pid) and waits until cancelled.
stuck
    starts ``sleep 60``, sends ``spawned`` and waits for it, ignoring
    cancellation.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tproxy_worker import Worker, main  # noqa: E402

w = Worker("tproxy-python-orphan-test", "1")


def _grandchild():
    # The shell prints the background sleep's pid and exits: the sleep is
    # reparented, and stays in the shell's process group, the worker's.
    out = subprocess.run(["/bin/sh", "-c", "sleep 60 </dev/null >/dev/null 2>&1 & echo $!"],
                         stdout=subprocess.PIPE, check=True).stdout
    return int(out.split()[0])


@w.driver("spawn")
def spawn(step):
    child = subprocess.Popen(["sleep", "60"])
    data = {"worker": os.getpid(), "child": child.pid}
    if step.config.get("grandchild"):
        data["grandchild"] = _grandchild()
    step.event("spawned", data)
    if step.config.get("leave"):
        while True:
            step.sleep(0.05)
    try:
        while child.poll() is None:
            step.sleep(0.02)
    finally:
        child.kill()
        child.wait()


@w.driver("block")
def block(step):
    step.event("blocked", {"worker": os.getpid()})
    while True:
        step.sleep(0.05)


@w.driver("stuck")
def stuck(step):
    child = subprocess.Popen(["sleep", "60"])
    step.event("spawned", {"worker": os.getpid(), "child": child.pid})
    child.wait()


if __name__ == "__main__":
    main(w)
