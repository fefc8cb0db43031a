"""A worker whose drivers print the step's secret (config ``password``) to
stdout and stderr, for the tests of stderr masking (stderrmask_test.go,
test_stderr_mask.py).

leak
    prints the secret in many forms to ``sys.stdout``, ``sys.stderr``, fds
    1 and 2 directly, and through a child process (``sh -c 'echo
    $SECRET'``), then ``leak done``.
split
    writes "connecting with " and the secret's first half to fd 2, waits
    config ``pause`` seconds (default 0.1), writes the rest and " now".
long
    writes one line of config ``size`` bytes (default 100 KiB) holding the
    secret in its middle, in one write.
say
    writes config ``text`` to fd 2 as it is.
"""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tproxy_worker import Worker, main  # noqa: E402

w = Worker("tproxy-python-stderr-mask-test", "1")


def forms(s):
    """The secret as drivers and libraries print it."""
    b = s.encode()
    return [
        s,
        json.dumps(s),
        json.dumps({"dsn": "x", "pw": s}),
        repr(s),
        ascii(s),
        urllib.parse.quote(s, safe=""),
        urllib.parse.quote_plus(s),
        b.hex(),
        b.hex().upper(),
        base64.b64encode(b).decode(),
        base64.urlsafe_b64encode(b).decode().rstrip("="),
        base64.b64encode(b"user:" + b).decode(),  # a basic auth header
    ]


@w.driver("leak")
def leak(step):
    secret = step.config["password"]
    for f in forms(secret):
        print("stdout print:", f)
        print("stderr print:", f, file=sys.stderr)
        os.write(1, ("fd1: %s\n" % f).encode())
        os.write(2, ("fd2: %s\n" % f).encode())
    sys.stdout.flush()
    sys.stderr.flush()
    subprocess.run(["sh", "-c", 'echo "child: $SECRET"; echo "child err: $SECRET" >&2'],
                   env=dict(os.environ, SECRET=secret), check=True)
    os.write(2, b"leak done\n")


@w.driver("split")
def split(step):
    secret = step.config["password"]
    half = len(secret) // 2
    os.write(2, ("connecting with " + secret[:half]).encode())
    time.sleep(float(step.config.get("pause", 0.1)))
    os.write(2, (secret[half:] + " now\n").encode())


@w.driver("long")
def long(step):
    secret = step.config["password"]
    size = int(step.config.get("size", 100 * 1024))
    pad = "x" * ((size - len(secret)) // 2)
    os.write(2, ("%s%s%s\n" % (pad, secret, pad)).encode())


@w.driver("say")
def say(step):
    os.write(2, step.config["text"].encode())


if __name__ == "__main__":
    main(w)
