"""Tests of secret masking in the forms the Go runtime masks
(internal/mask) and in everything written to the worker's fds 1 and 2
(the Go runtime's worker/stderrmask.go).

    python3 -m unittest discover -s workers/python -v
"""

import base64
import json
import os
import random
import sys
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import tproxy_worker as tw  # noqa: E402
from test_tproxy_worker import WorkerTest  # noqa: E402

MASK_WORKER = os.path.join(HERE, "testdata", "stderr_mask_worker.py")
SECRET = 'S3cret/Value+12345 "q"\\&<é>'


def printed_forms(s):
    """The secret as Python code prints it."""
    b = s.encode()
    return [
        s, json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1], repr(s)[1:-1], ascii(s)[1:-1],
        json.dumps(json.dumps(s))[3:-3],
        urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s), urllib.parse.quote(s),
        b.hex(), b.hex().upper(),
        base64.b64encode(b).decode(), base64.urlsafe_b64encode(b).decode(),
        base64.b64encode(b).decode().rstrip("="),
    ]


class FormsTest(unittest.TestCase):
    def masker(self, *values):
        m = tw.Masker()
        m.add_values(*values)
        return m

    def test_every_form_masked(self):
        m = self.masker(SECRET)
        for f in printed_forms(SECRET):
            with self.subTest(form=f):
                self.assertEqual(m.string("a %s b" % f), "a %s b" % tw.MASKED)
                self.assertEqual(m.mask_prefix(("a %s b" % f).encode(), True), (b"a ***MASKED*** b", len(f.encode()) + 4))

    def test_go_quoted(self):
        m = self.masker('quo"ted\\secret')
        # Go's %q, and a JSON string quoted again.
        for text in ['"quo\\"ted\\\\secret"', '"\\"quo\\\\\\"ted\\\\\\\\secret\\""']:
            self.assertNotIn("ted", m.string(text))

    def test_base64_inside_longer_text(self):
        m = self.masker("SecretValue12345")
        for pre in (b"", b"u", b"us", b"user:"):
            enc = base64.b64encode(pre + b"SecretValue12345" + b"!").decode()
            self.assertIn(tw.MASKED, m.string(enc), pre)

    def test_short_values_masked_only_where_they_stand(self):
        m = tw.Masker()
        cfg = {"password": "abc", "token": "abcd"}
        self.assertEqual(m.config(cfg), {"password": tw.MASKED, "token": tw.MASKED})
        self.assertEqual(m.string("abc abcd 61626364"), "abc %s %s" % (tw.MASKED, tw.MASKED))
        # No form shorter than 4 bytes: "abcd" is "YWJjZA" in base64, whose
        # 2-character middles are not searched for.
        self.assertTrue(all(len(f.encode()) >= tw.MIN_SECRET_LEN for f in tw.secret_forms("abcd")))
        self.assertEqual(m.string("YW"), "YW")

    def test_mask_prefix_equals_masking_whole(self):
        m = self.masker("SecretValue12345", 'quo"ted\\secret', "hunter22")
        text = ("pw=SecretValue12345; q=\"quo\\\"ted\\\\secret\" %s %s hunter2 hunter22\n" % (
            base64.b64encode(b"SecretValue12345").decode(), b"hunter22".hex())).encode() * 3
        want = m.string(text.decode()).encode()
        rnd = random.Random(1)
        for trial in range(200):
            pending, out = b"", []
            i = 0
            while i < len(text):
                n = rnd.randint(1, 40)
                pending += text[i:i + n]
                i += n
                got, k = m.mask_prefix(pending, False)
                out.append(got)
                pending = pending[k:]
                self.assertTrue(want.startswith(b"".join(out)), trial)
            got, k = m.mask_prefix(pending, True)
            self.assertEqual(k, len(pending))
            out.append(got)
            self.assertEqual(b"".join(out), want, trial)

    def test_mask_prefix_holds_back_only_a_possible_secret(self):
        m = self.masker("SecretValue12345")
        self.assertEqual(m.mask_prefix(b"hello Secr", False), (b"hello ", 6))
        self.assertEqual(m.mask_prefix(b"hello Sx", False), (b"hello Sx", 8))
        self.assertEqual(m.mask_prefix(b"Secr", True), (b"Secr", 4))
        self.assertEqual(tw._NoMask().mask_prefix(b"abc", False), (b"abc", 3))


class StderrFilterTest(WorkerTest):
    """The worker masks the session's secrets in what drivers, libraries
    and child processes write to fds 1 and 2."""

    script = MASK_WORKER

    def run_steps(self, *steps):
        self.prepare(*[(sid, drv) for sid, drv, _ in steps])
        for sid, drv, cfg in steps:
            _, r = self.exec(sid, drv, cfg)
            self.assertIn("result", r, r)
        self.assertEqual(self.w.close(), 0)
        return bytes(self.w.err)

    def assertMasked(self, err, secret=SECRET):
        text = err.decode("utf-8", "replace")
        for f in printed_forms(secret):
            self.assertNotIn(f.encode(), err, "form %r reached stderr:\n%s" % (f, text[-3000:]))
        # Nor the end of one: the secret's unusual middle.
        self.assertNotIn(b"Value+123", err)

    def test_drivers_and_children_masked(self):
        err = self.run_steps(("a", "leak", {"password": SECRET}))
        self.assertMasked(err)
        self.assertIn(b"leak done", err)
        self.assertIn(b"child: " + tw.MASKED.encode(), err)
        self.assertIn(b"child err: " + tw.MASKED.encode(), err)
        self.assertIn(b"stdout print: " + tw.MASKED.encode(), err)
        self.assertIn(b"fd1: " + tw.MASKED.encode(), err)

    def test_secret_split_100ms_apart(self):
        err = self.run_steps(("a", "split", {"password": SECRET, "pause": 0.1}))
        self.assertMasked(err)
        self.assertIn(b"connecting with " + tw.MASKED.encode() + b" now\n", err)

    def test_line_over_64k(self):
        err = self.run_steps(("a", "long", {"password": SECRET, "size": 100 * 1024}))
        self.assertMasked(err)
        self.assertIn(b"x" + tw.MASKED.encode() + b"x", err)
        self.assertGreater(err.count(b"x"), 90 * 1024)

    def test_secret_learned_at_prepare(self):
        # A secret of the session config, printed before any step names one.
        self.prepare(("a", "leak"), config={"token": SECRET})
        _, r = self.exec("a", "leak", {"password": SECRET})
        self.assertIn("result", r, r)
        self.assertEqual(self.w.close(), 0)
        self.assertMasked(bytes(self.w.err))

    def test_held_prefix_flushed_at_exit(self):
        # The last bytes could start the secret: held until the pipe ends,
        # then written as they are; what comes before them is not held.
        self.prepare(("a", "say"))
        _, r = self.exec("a", "say", {"password": SECRET, "text": "bye S3cr"})
        self.assertIn("result", r, r)
        deadline = time.monotonic() + 5
        while b"bye " not in self.w.err and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        self.assertTrue(bytes(self.w.err).endswith(b"bye "), bytes(self.w.err)[-100:])
        self.assertEqual(self.w.close(), 0)
        self.assertTrue(bytes(self.w.err).endswith(b"bye S3cr"), bytes(self.w.err)[-100:])

    def test_no_secrets_no_filter(self):
        err = self.run_steps(("a", "split", {"pw_hint": "not-a-secret", "password": "abc", "pause": 0}))
        # "abc" is too short to search for: printed as it is.
        self.assertIn(b"connecting with abc now", err)


if __name__ == "__main__":
    unittest.main()
