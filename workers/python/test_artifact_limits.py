"""Tests of list_artifacts under prepare's artifact_limits
(docs/protocol.md section 10), in-process.

    python3 -m unittest discover -s workers/python -v
"""

import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import tproxy_worker as tw  # noqa: E402


def make(d, files):
    """Create sparse files: path -> size."""
    for rel, size in files.items():
        p = os.path.join(d, *rel.split("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.truncate(size)


class ArtifactLimitsTest(unittest.TestCase):
    def listing(self, files, **limits):
        with tempfile.TemporaryDirectory() as d:
            make(d, files)
            refused = []
            arts = tw.list_artifacts(d, lambda p, r, n=1: refused.append((p, r, n)), **limits)
            return [a["path"] for a in arts], refused

    def test_max_files_keeps_cleaned_config(self):
        paths, refused = self.listing({"a": 1, "b": 1, "c": 1, "d/e": 1, "z": 1, tw.CLEANED_CONFIG_FILE: 1}, max_files=3)
        self.assertEqual(paths, ["a", "b", tw.CLEANED_CONFIG_FILE])
        self.assertEqual(len(refused), 1)
        self.assertEqual(refused[0][0], ".")
        self.assertTrue(refused[0][1].startswith("3 more files were left out"), refused[0][1])
        self.assertEqual(refused[0][2], 3)

    def test_max_file_bytes_not_hashed(self):
        # A 4 GiB sparse file: refused from its size, never read.
        paths, refused = self.listing({"huge.bin": 4 << 30, "small": 10}, max_file_bytes=1 << 20)
        self.assertEqual(paths, ["small"])
        self.assertEqual([r[0] for r in refused], ["huge.bin"])
        self.assertIn("4294967296 bytes is over the host's cap of 1048576", refused[0][1])

    def test_cleaned_config_own_cap(self):
        paths, refused = self.listing({tw.CLEANED_CONFIG_FILE: 1000}, max_file_bytes=10)
        self.assertEqual((paths, refused), ([tw.CLEANED_CONFIG_FILE], []))
        paths, refused = self.listing({tw.CLEANED_CONFIG_FILE: 2 << 20}, max_file_bytes=10)
        self.assertEqual(paths, [])
        self.assertEqual([r[0] for r in refused], [tw.CLEANED_CONFIG_FILE])

    def test_no_limits(self):
        paths, refused = self.listing({"a": 1, "b/c": 2})
        self.assertEqual((paths, refused), (["a", "b/c"], []))


if __name__ == "__main__":
    unittest.main()
