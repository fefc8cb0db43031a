"""tproxy reference worker runtime for Python (stdlib only, Python 3.9+, POSIX).

A tproxy host (Go) runs a pipeline's steps in a worker process and talks to it
in JSON-RPC 2.0, one JSON object per line, over the worker's stdin and stdout.
The wire contract is docs/protocol.md; this module implements the worker side
of it so that a Python driver needs nothing but a function::

    from tproxy_worker import Worker, main

    w = Worker("my-worker", "1.0.0")

    @w.driver("csv_extract")
    def csv_extract(step):
        rows = read_csv(step.config["path"])
        step.event("progress", {"rows_read": len(rows)})
        step.metric("rows_read", len(rows), unit="rows")
        step.log.info("extracted %d rows", len(rows), extra={"rows": len(rows)})
        step.set_rows(len(rows))
        step.set_output("table", rows)      # stays in this process

    if __name__ == "__main__":
        main(w)

A driver fails its step by raising. The step failure's ``error_type`` is a
stable category of docs/protocol.md section 7 (the ``ERROR_*`` constants),
never a class name: ``cancelled`` once the host cancelled the step, the
exception's ``error_type`` attribute when it has a non-empty string one (see
:class:`StepError`, :class:`ConfigError`, :class:`InputMissing`), ``panic``
for a ``BaseException`` that is not an ``Exception`` (``SystemExit``),
``timeout`` for a ``TimeoutError``, and ``driver`` for anything else.

Running this file itself starts the conformance worker: the conformance
drivers of docs/protocol.md section 13 (``conform.*``), for the conformance kit::

    go run ./cmd/tproxy conform -- python3 workers/python/tproxy_worker.py

A worker process leaves nothing behind, as the Go runtime's does: at the end
of stdin, on SIGTERM, at a failed write to the host (EPIPE) and, on Linux,
when its parent dies (a parent-death signal armed through ``ctypes``), the
step in flight is cancelled and answered, the session directory removed, and
the processes its drivers left running killed; a later worker's first
prepare sweeps the session directories of workers killed outright. See
:meth:`Worker.serve`.

Configuration through the environment (read by :meth:`Worker.serve` when the
matching :class:`Worker` attribute is ``None``):

``TPROXY_MAX_FRAME_SIZE``
    the frame cap in bytes, both directions (default 16 MiB);
``TPROXY_HEARTBEAT_INTERVAL_MS``
    the heartbeat interval in milliseconds (default 1500; the protocol
    requires a heartbeat at least every 2000);
``TPROXY_WORK_DIR``
    where session directories are created (default: the system temp dir);
    stale ones, ``tproxy-*`` whose locked owner file's owner is gone and
    which are over 24 hours old, are swept at most hourly.
"""

from __future__ import annotations

import base64
import collections
import collections.abc
import datetime
import errno
import hashlib
import json
import logging
import math
import numbers
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
import traceback
import types
import unicodedata
import urllib.parse

try:
    import fcntl  # flock: the session directory's owner lock (POSIX)
except ImportError:
    fcntl = None

__all__ = [
    "Worker",
    "Step",
    "Cancelled",
    "StepError",
    "ConfigError",
    "StepFinished",
    "InputMissing",
    "ERROR_DRIVER",
    "ERROR_CONFIG",
    "ERROR_INPUT",
    "ERROR_TIMEOUT",
    "ERROR_CANCELLED",
    "ERROR_PANIC",
    "RPCError",
    "Masker",
    "main",
    "register_conformance_drivers",
    "conformance_worker",
    "summarize",
    "validate_id",
    "check_artifact_path",
    "PROTOCOL_VERSION",
    "MASKED",
    "DEFAULT_SECRET_KEYS",
    "HOST_EVENTS",
]

__version__ = "1.0.0"

#: The protocol major version this runtime speaks (ping's ``protocol``).
PROTOCOL_VERSION = 1
#: The default frame cap: the largest message accepted or sent, in bytes.
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
#: How often a busy worker sends a heartbeat by default, in seconds: under
#: the protocol's 2 s, so that scheduling jitter never stretches a gap past it.
DEFAULT_HEARTBEAT_INTERVAL = 1.5
#: The largest chunk fetch_artifact returns, in bytes.
ARTIFACT_CHUNK = 1024 * 1024
#: The artifact the runtime writes before each step: its config, masked.
CLEANED_CONFIG_FILE = "cleaned_config.json"
#: What a secret is replaced by.
MASKED = "***MASKED***"
#: Config key patterns whose values are secrets (docs/protocol.md section 11;
#: the same list as the Go runtime's tproxy.DefaultSecretKeys). A pattern
#: matches a key when its words, concatenated, occur in the key's words
#: concatenated; one ending in ``$`` when they equal the key's last words.
DEFAULT_SECRET_KEYS = (
    "password", "passwd", "passphrase", "passcode", "pwd",
    "secret", "token", "credential", "bearer", "jwt", "cookie", "dsn",
    "authorization", "authheader", "authkey",
    "apikey", "accesskey", "privatekey", "privkey", "sshkey", "signingkey",
    "encryptionkey", "masterkey", "sessionkey", "accountkey", "licensekey", "clientkey",
    "connectionstring", "connstr",
    "auth$", "pass$", "creds$", "session$", "signature$", "sig$", "pin$", "otp$",
)
#: Secrets shorter than this (in UTF-8 bytes) are masked as values but not
#: searched for inside free text.
MIN_SECRET_LEN = 4

# Error codes (docs/protocol.md section 7).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REQUEST_CANCELLED = -32800
NOT_PREPARED = -32001
SESSION_MISMATCH = -32002
UNKNOWN_DRIVER = -32003
STEP_FAILED = -32004
INPUT_UNAVAILABLE = -32005

#: The events only the host writes (protocol section 6.1): a worker's
#: event under one of these names would pass for the host's, so
#: Step.event refuses them.
HOST_EVENTS = frozenset(("run_start", "phase_complete", "step_skipped", "step_timeout", "step_retry",
                         "artifact_skipped", "protocol_warning", "run_complete", "run_failed"))
_PROTOCOL_METHODS = ("ping", "prepare", "exec_step", "cleanup", "fetch_artifact")
_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_TERM_GRACE = 2.0  # seconds a stopping session waits for its driver (the Go runtime's StopGrace)
_EXIT_GRACE = 3.0  # seconds main() gives interpreter shutdown before it forces the exit
_MAX_TRACEBACK = 16 * 1024  # bytes of traceback kept in a step_failed event


# ---------------------------------------------------------------------------
# Error types: the categories of a failed step's error_type (docs/protocol.md
# section 7), the same in every worker, so that a host can branch on them.

ERROR_DRIVER = "driver"  # the driver failed, for a reason of its own (the default)
ERROR_CONFIG = "config"  # the step's config does not fit the driver
ERROR_INPUT = "input"  # an input the driver needs is missing or not what it expects
ERROR_TIMEOUT = "timeout"  # a deadline inside the driver passed (TimeoutError)
ERROR_CANCELLED = "cancelled"  # the host cancelled the step, or the worker stopped under it
ERROR_PANIC = "panic"  # the driver crashed: a BaseException that is not an Exception

# ---------------------------------------------------------------------------
# Exceptions


class Cancelled(BaseException):
    """Raised in a driver once its step is cancelled by the host.

    The step's emitting methods (``event``, ``metric``, ``log``) and
    :meth:`Step.check_cancelled` / :meth:`Step.sleep` raise it, so that a
    driver loop that reports progress stops promptly. A driver may raise it
    itself. The step then fails with ``error_type`` ``cancelled``.

    Like :class:`asyncio.CancelledError`, it derives from ``BaseException``,
    not ``Exception``: a driver's ``except Exception:`` does not swallow it.
    Clean up in ``finally`` blocks or context managers.
    """

    def __init__(self, message="cancelled"):
        super().__init__(message)


class StepError(Exception):
    """An exception with an explicit ``error_type``.

    ``raise StepError("no such table", error_type="missing_table")`` fails
    the step with that error type. Any exception class may instead carry an
    ``error_type`` attribute (class or instance) holding a non-empty string.
    """

    def __init__(self, message, error_type=None):
        super().__init__(message)
        if error_type:
            self.error_type = error_type


class ConfigError(StepError, ValueError):
    """The step's config does not fit the driver: raise it for a missing,
    unknown or invalid key, and the step fails with ``error_type``
    ``config``. Name the key in the message."""

    error_type = ERROR_CONFIG

    def __init__(self, message):
        super().__init__(message)


class StepFinished(RuntimeError):
    """Raised when a step's emitting methods are called after it ended:
    everything a step emits reaches the host before its result."""


class InputMissing(KeyError):
    """The ``KeyError`` :meth:`Step.input` raises for an input the step does
    not have. Its message is readable (no quotes) and its ``error_type`` is
    ``input``."""

    error_type = ERROR_INPUT

    def __str__(self):
        return str(self.args[0]) if self.args else "input missing"


class FrameTooLarge(ValueError):
    """A message is over the frame cap and was not sent."""


class RPCError(Exception):
    """A JSON-RPC error a custom method handler (:meth:`Worker.handle`)
    raises to answer with a code of its choosing."""

    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code = int(code)
        self.message = str(message)
        self.data = data


class _ParamsError(Exception):
    """Invalid params: answered -32602."""


_MISSING = object()


# ---------------------------------------------------------------------------
# Pure helpers


def utc_now():
    """The current time as an RFC 3339 UTC timestamp ending in ``Z``."""
    return _timestamp(datetime.datetime.now(datetime.timezone.utc))


def _timestamp(dt):
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def validate_id(value, kind="id"):
    """Check a session or step id (docs/protocol.md section 3): 1 to 128
    characters from ``A-Z a-z 0-9 . _ -``, beginning with a letter or digit.
    Raise ``ValueError`` naming ``kind`` if it is not one."""
    if not isinstance(value, str):
        raise ValueError("%s must be a string, not %s" % (kind, _json_type(value)))
    if value == "":
        raise ValueError("%s is empty" % kind)
    if len(value) > 128:
        raise ValueError("%s %r... is %d characters long, over the limit of 128" % (kind, value[:20], len(value)))
    if not _ID_RE.match(value):
        raise ValueError("%s %r: use letters, digits, '.', '_', '-', starting with a letter or digit" % (kind, value))
    return value


def check_artifact_path(p):
    """Refuse an artifact path that is not clean and relative (section 10):
    empty, absolute, with a ``.``, ``..`` or empty element, a backslash or a
    NUL byte. Raise ``ValueError`` saying why."""
    if not isinstance(p, str):
        raise ValueError("artifact path must be a string, not %s" % _json_type(p))
    if p == "":
        raise ValueError("artifact path is empty")
    if "\\" in p or "\x00" in p:
        raise ValueError("artifact path %r contains a backslash or NUL byte" % p)
    if p.startswith("/"):
        raise ValueError("artifact path %r is absolute; artifact paths are relative to the step's artifact directory" % p)
    if any(e in ("", ".", "..") for e in p.split("/")):
        raise ValueError("artifact path %r is not a clean relative path (no '..', '.' or empty elements)" % p)
    return p


def summarize(value):
    """Describe a step output without sending it, as the Go runtime does:
    ``value.summary()`` if it has one; else ``{"type", "value"}`` for a
    scalar (``bool``, ``int``, ``float``, ``None``); ``{"type", "len"}`` for
    anything with a length (``str``, ``list``, ``dict``...); else ``{"type"}``."""
    s = getattr(value, "summary", None)
    if callable(s) and not isinstance(value, type):
        return s()
    out = {"type": type(value).__name__}
    if value is None or isinstance(value, (bool, int, float)):
        out["value"] = value
        return out
    try:
        out["len"] = len(value)
    except Exception:  # no len(), or a broken one
        pass
    return out


def _json_type(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_integer(v):
    """A JSON number with an integral value, in any notation (3, 3.0, 3e0)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, numbers.Integral):
        return True
    return isinstance(v, float) and math.isfinite(v) and v.is_integer()


def _to_json(v, _depth=0):
    """A JSON-encodable copy of v: dict keys become strings, tuples and sets
    lists, non-finite floats null, datetimes RFC 3339 strings, and any other
    object its str()."""
    if _depth > 200:
        return str(v)
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, dict) or isinstance(v, types.MappingProxyType):
        return {str(k) if not isinstance(k, str) else k: _to_json(e, _depth + 1) for k, e in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_json(e, _depth + 1) for e in v]
    if isinstance(v, (set, frozenset)):
        return [_to_json(e, _depth + 1) for e in sorted(v, key=repr)]
    if isinstance(v, datetime.datetime):
        return _timestamp(v)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    if hasattr(v, "items") and callable(v.items):
        try:
            return {str(k): _to_json(e, _depth + 1) for k, e in v.items()}
        except Exception:
            pass
    return str(v)


def _encode(obj):
    """One compact JSON line (without the newline), as UTF-8 bytes."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: escape them instead
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def _reject_constant(name):
    raise ValueError("%s is not valid JSON" % name)


# ---------------------------------------------------------------------------
# Secrets


def _key_words(k):
    """The words of key ``k`` (docs/protocol.md section 11), lower-cased:
    split at every character that is not an ASCII letter or digit, and
    before an upper-case letter that follows a lower-case letter or a digit,
    or that starts a capitalized word after other upper-case letters."""
    words = []
    for run in re.findall(r"[A-Za-z0-9]+", k):
        start = 0
        for i in range(1, len(run)):
            c, prev = run[i], run[i - 1]
            if c.isupper() and (prev.islower() or prev.isdigit() or
                                (prev.isupper() and i + 1 < len(run) and run[i + 1].islower())):
                words.append(run[start:i].lower())
                start = i
        words.append(run[start:].lower())
    return words


def _key_pattern(p):
    """A key pattern as (words concatenated, whether it must end the key)."""
    suffix = p.endswith("$")
    return "".join(_key_words(p[:-1] if suffix else p)), suffix


def _parse_pointer(p):
    if not isinstance(p, str):
        raise ValueError("secret pointer must be a string, not %s" % _json_type(p))
    if p == "":
        raise ValueError('secret pointer is empty (the whole config cannot be one secret; name the member, e.g. "/password")')
    if not p.startswith("/"):
        raise ValueError("secret pointer %r does not start with '/'" % p)
    toks = p[1:].split("/")
    for t in toks:
        if re.search(r"~(?![01])", t):
            raise ValueError("secret pointer %r: '~' must be followed by 0 or 1" % p)
    return [t.replace("~1", "/").replace("~0", "~") for t in toks]


def _lookup(v, toks):
    for t in toks:
        if isinstance(v, dict):
            if t not in v:
                return _MISSING
            v = v[t]
        elif isinstance(v, list):
            if not t.isdigit() or int(t) >= len(v):
                return _MISSING
            v = v[int(t)]
        else:
            return _MISSING
    return v


# The forms a secret takes in text (the Go runtime's internal/mask
# secretForms): escaped as JSON, Go and Python string literals do, quoted
# twice, URL-escaped, hex, base64.

_MASKED_B = MASKED.encode()
_JSON_HTML, _JSON_LINESEP, _JSON_ASCII, _JSON_UPPER = 1, 2, 4, 8
_JSON_GO = _JSON_HTML | _JSON_LINESEP  # encoding/json's default
_JSON_NOHTML = _JSON_LINESEP  # json.Encoder with SetEscapeHTML(false)
_JSON_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_GO_SHORT = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
             "\\": "\\\\", '"': '\\"'}
# What Go's url package leaves unescaped besides letters, digits and -._~
# (url.PathEscape; URL.EscapedPath; URL.EscapedFragment; a Userinfo's
# user and password).
_URL_SAFE = ("$&+:=@", "$&+,/:;=@", "!$&()*+,/:;=?@", "$&+,;=")


def _json_escape(s, p):
    """``s`` escaped as the content of a JSON string under profile ``p``."""
    fmt = "\\u%04X" if p & _JSON_UPPER else "\\u%04x"
    out = []
    for c in s:
        r = ord(c)
        if c in _JSON_SHORT:
            out.append(_JSON_SHORT[c])
        elif (r < 0x20 or (p & _JSON_ASCII and r == 0x7f) or (p & _JSON_HTML and c in "<>&")
              or (p & _JSON_LINESEP and c in "\u2028\u2029")):
            out.append(fmt % r)
        elif p & _JSON_ASCII and r >= 0x80:
            if r >= 0x10000:
                r -= 0x10000
                out.append(fmt % (0xd800 + (r >> 10 & 0x3ff)) + fmt % (0xdc00 + (r & 0x3ff)))
            else:
                out.append(fmt % r)
        else:
            out.append(c)
    return "".join(out)


def _go_quote(s, mode="print"):
    """The content of Go's strconv.Quote (mode "print"), QuoteToASCII
    ("ascii") or QuoteToGraphic ("graphic") of ``s``, without the quotes."""
    out = []
    for c in s:
        r = ord(c)
        if c in _GO_SHORT:
            out.append(_GO_SHORT[c])
        elif r < 0x20 or r == 0x7f:
            out.append("\\x%02x" % r)
        elif r < 0x80:
            out.append(c)
        elif mode != "ascii" and (c.isprintable() or mode == "graphic" and unicodedata.category(c) == "Zs"):
            out.append(c)
        elif r < 0x10000:
            out.append("\\u%04x" % r)
        else:
            out.append("\\U%08x" % r)
    return "".join(out)


def _py_escape(s, quote, ascii_only):
    """The content of the literal Python's repr (ascii, with
    ``ascii_only``) writes for ``s``, escaping ``quote`` (or no quote)."""
    out = []
    for c in s:
        r = ord(c)
        if c == "\\" or c == quote:
            out.append("\\" + c)
        elif c in "\t\n\r":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r"}[c])
        elif r < 0x20 or r == 0x7f:
            out.append("\\x%02x" % r)
        elif r < 0x80 or not ascii_only and c.isprintable():
            out.append(c)
        elif r <= 0xff:
            out.append("\\x%02x" % r)
        elif r <= 0xffff:
            out.append("\\u%04x" % r)
        else:
            out.append("\\U%08x" % r)
    return "".join(out)


def _b64_middle(enc, b, off):
    """The characters of the unpadded base64 (``enc``) of a text holding
    ``b`` at offset ``off`` of a 3-byte group that encode ``b``'s bits
    alone."""
    t = enc(bytes(off) + b).decode().rstrip("=")
    lo, hi = (8 * off + 5) // 6, 8 * (off + len(b)) // 6
    return t[lo:hi] if lo < hi else ""


def secret_forms(s):
    """The forms in which text holding secret ``s`` holds it, as the Go
    runtime masks them (internal/mask): raw; escaped as the content of a
    JSON string (with and without HTML escaping, ASCII-only, upper-case
    \\u digits), of a Go string (strconv.Quote, QuoteToASCII,
    QuoteToGraphic) and of Python's repr and ascii; quoted twice (JSON or
    Go, and twice by Python's json.dumps); URL-escaped (Go's query, path,
    fragment and userinfo escaping, Python's quote and quote_plus); hex, lower and
    upper case; base64, standard and URL alphabets, padded or not, whole
    and, for each of the 3 offsets within base64's groups, the characters
    that encode its bytes alone. Only forms of 4 bytes or more."""
    forms = [s]

    def add(f):
        if len(f.encode("utf-8", "surrogatepass")) >= MIN_SECRET_LEN and f not in forms:
            forms.append(f)

    for p in (_JSON_GO, _JSON_NOHTML, 0, _JSON_ASCII, _JSON_ASCII | _JSON_HTML):
        add(_json_escape(s, p))
        add(_json_escape(s, p | _JSON_UPPER))
    for mode in ("print", "ascii", "graphic"):
        add(_go_quote(s, mode))
    for quote in ("'", None):
        for ascii_only in (False, True):
            add(_py_escape(s, quote, ascii_only))
    for e in (_json_escape(s, _JSON_GO), _go_quote(s)):
        add(_json_escape(e, _JSON_GO))
        add(_json_escape(e, _JSON_NOHTML))
        add(_go_quote(e))
    # Python's json.dumps escapes non-ASCII by default: quoted twice by it.
    add(_json_escape(_json_escape(s, _JSON_ASCII), _JSON_ASCII))
    b = s.encode("utf-8", "surrogatepass")
    add(urllib.parse.quote_plus(b, safe=""))
    for safe in _URL_SAFE + ("", "/"):  # Go's; then Python's quote(s, safe=""), quote(s)
        add(urllib.parse.quote(b, safe=safe))
    add(b.hex())
    add(b.hex().upper())
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        whole = enc(b).decode()
        add(whole)
        add(whole.rstrip("="))
        for off in range(3):
            add(_b64_middle(enc, b, off))
    return forms


class Masker:
    """Replaces secrets by ``***MASKED***`` (docs/protocol.md section 11).

    It learns secret values from the configs it is shown (:meth:`learn`,
    :meth:`config`): values under keys matching a pattern (see
    ``DEFAULT_SECRET_KEYS``) and values at RFC 6901 pointers. It then masks
    them in values under secret keys wherever they appear (:meth:`value`)
    and, for secrets of 4 bytes or more, as substrings of any string
    (:meth:`string`). Safe for concurrent use.
    """

    def __init__(self, keys=None, pointers=None):
        self._keys = []
        for k in list(DEFAULT_SECRET_KEYS) + list(keys or ()):
            if not isinstance(k, str):
                raise ValueError("secret key pattern must be a string, not %s" % _json_type(k))
            k = _key_pattern(k)
            if k[0] and k not in self._keys:
                self._keys.append(k)
        self._pointers = [_parse_pointer(p) for p in (pointers or ())]
        self._values = []
        self._re = None
        self._bmatch = None  # (bytes regex, proper prefixes of the forms, longest form's length)
        self._lock = threading.Lock()

    def secret_key(self, key):
        """Whether config key ``key`` names a secret."""
        words = _key_words(str(key))
        joined = "".join(words)
        ends = {"".join(words[i:]) for i in range(len(words))}
        return any((w in ends) if suffix else (w in joined) for w, suffix in self._keys)

    @property
    def has_values(self):
        """Whether any secret value is known for masking inside text."""
        return self._re is not None

    def learn(self, cfg):
        """Remember the secret values of config ``cfg`` (a dict)."""
        if not isinstance(cfg, dict):
            return
        found = []
        self._collect(cfg, False, found)
        for toks in self._pointers:
            v = _lookup(cfg, toks)
            if v is not _MISSING:
                self._collect(v, True, found)
        self.add_values(*found)

    def add_values(self, *values):
        """Mask each of ``values`` as a secret from now on."""
        with self._lock:
            changed = False
            for v in values:
                if isinstance(v, str) and len(v.encode("utf-8", "surrogatepass")) >= MIN_SECRET_LEN and v not in self._values:
                    self._values.append(v)
                    changed = True
            if changed:
                # Every form of every value, longest first: where forms
                # start at one place, the longest is masked (as in Go).
                forms = set()
                for v in self._values:
                    forms.update(secret_forms(v))
                forms = sorted(forms, key=lambda f: (-len(f), f))
                self._re = re.compile("|".join(re.escape(f) for f in forms))
                bforms = sorted({f.encode("utf-8", "surrogatepass") for f in forms}, key=lambda f: (-len(f), f))
                prefixes = set()
                for f in bforms:
                    prefixes.update(f[:k] for k in range(1, len(f)))
                # Published as one tuple: mask_prefix reads it without the lock.
                self._bmatch = (re.compile(b"|".join(re.escape(f) for f in bforms)), prefixes, len(bforms[0]))

    def _collect(self, v, secret, out):
        if isinstance(v, dict):
            for k, e in v.items():
                self._collect(e, secret or self.secret_key(k), out)
        elif isinstance(v, (list, tuple)):
            for e in v:
                self._collect(e, secret, out)
        elif not secret or v is None or isinstance(v, bool):
            return
        elif isinstance(v, str):
            out.append(v)
        else:
            try:
                out.append(json.dumps(v).strip('"'))
            except (TypeError, ValueError):
                out.append(str(v))

    def string(self, s):
        """``s`` with every known secret value, in each of its forms (see
        :func:`secret_forms`), replaced."""
        r = self._re
        if r is None or not isinstance(s, str):
            return s
        return r.sub(MASKED, s)

    def mask_prefix(self, b, final):
        """Mask bytes that arrive in pieces, such as a pipe's, the way the
        Go runtime's Masker.MaskPrefix does: return ``(masked, n)``, the
        masked form of ``b[:n]``, the longest prefix of ``b`` that the bytes
        after ``b`` cannot change. ``b[n:]`` starts what could still be a
        form of a secret (it is shorter than the longest form); pass it
        again, followed by what comes next. With ``final``, n is len(b)."""
        bm = self._bmatch
        if bm is None:
            return bytes(b), len(b)
        rx, prefixes, max_len = bm
        b = bytes(b)
        # Where the text could still become a form: a position whose rest
        # is a proper prefix of a form. Such a position outranks a shorter
        # form matching there, as the longest form that starts first wins.
        undecided = []
        if not final:
            undecided = [i for i in range(max(0, len(b) - max_len + 1), len(b)) if b[i:] in prefixes]
        out = []
        pos = 0
        u = 0  # index into undecided
        while True:
            while u < len(undecided) and undecided[u] < pos:
                u += 1
            stop = undecided[u] if u < len(undecided) else len(b)
            # Searched in all of b: a form that starts before stop may end
            # past it, and is then masked whole.
            m = rx.search(b, pos) if pos < stop else None
            if m is None or m.start() >= stop:
                out.append(b[pos:stop])
                return b"".join(out), stop
            out.append(b[pos:m.start()])
            out.append(_MASKED_B)
            pos = m.end()

    def value(self, v):
        """A copy of JSON-like ``v`` with secrets masked: a value under a
        secret key is replaced whole, known secrets inside strings replaced."""
        if isinstance(v, str):
            return self.string(v)
        if isinstance(v, dict):
            return {k: (MASKED if self.secret_key(k) else self.value(e)) for k, e in v.items()}
        if isinstance(v, (list, tuple)):
            return [self.value(e) for e in v]
        return v

    def tags(self, tags):
        """Metric tags with values under secret keys and known secrets masked."""
        return {k: (MASKED if self.secret_key(k) else self.string(e)) for k, e in tags.items()}

    def config(self, cfg):
        """Learn ``cfg``'s secrets and return a masked deep copy of it, fit
        to be written anywhere (``cleaned_config.json``)."""
        if cfg is None:
            return {}
        self.learn(cfg)
        out = self.value(cfg)  # a copy: value() rebuilds every dict and list
        for toks in self._pointers:
            if not toks:
                continue
            parent = _lookup(out, toks[:-1])
            last = toks[-1]
            if isinstance(parent, dict) and last in parent:
                parent[last] = MASKED
            elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
                parent[int(last)] = MASKED
        return out


class _NoMask:
    """The masker before prepare: masks nothing."""

    has_values = False

    def string(self, s):
        return s

    def value(self, v):
        return v

    def tags(self, tags):
        return tags

    def mask_prefix(self, b, final):
        return bytes(b), len(b)


# ---------------------------------------------------------------------------
# Steps


_STD_RECORD_KEYS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


def _wire_level(levelno):
    if levelno < logging.INFO:
        return "DEBUG"
    if levelno < logging.WARNING:
        return "INFO"
    if levelno < logging.ERROR:
        return "WARN"
    return "ERROR"


class _LogHandler(logging.Handler):
    """Sends a step's log records to the host as ``log`` notifications.

    Its ``emit`` lets :class:`Cancelled` and :class:`StepFinished` through to
    the logging call, like the step's other emitting methods."""

    def __init__(self, step):
        super().__init__()
        self._step = step

    def emit(self, record):
        try:
            self._step._log_record(record)
        except StepFinished:
            raise
        except Exception:  # a bad format string, an oversize record: as logging does
            self.handleError(record)


class Step:
    """One running step: what a driver reads and how it reports back.

    Its methods are safe to call from the driver's own threads.
    """

    def __init__(self, server, job, step_id, driver, number, config, inputs, session_id,
                 session_config, dir, artifact_dir, level):
        self._server = server
        self._job = job
        self._id = step_id
        self._driver = driver
        self._number = number
        self._config = config
        self._inputs = inputs
        self._session_id = session_id
        self._session_config = session_config
        self._dir = dir
        self._dir_made = False
        self._artifact_dir = artifact_dir
        self._lock = threading.Lock()
        self._done = False
        self._rows = 0
        self._outputs = {}
        self._log = logging.Logger("tproxy.step." + step_id)
        self._log.propagate = False
        self._log.setLevel(level)
        self._log.addHandler(_LogHandler(self))

    @property
    def id(self):
        """The step's id."""
        return self._id

    @property
    def driver(self):
        """The name the step's driver was registered under."""
        return self._driver

    @property
    def number(self):
        """The step's number in the session (1 for the first step run)."""
        return self._number

    @property
    def session_id(self):
        """The id of the host's session."""
        return self._session_id

    @property
    def config(self):
        """The step's configuration as sent by the host (a dict)."""
        return self._config

    @property
    def session_config(self):
        """The session-wide configuration sent with prepare (a dict)."""
        return self._session_config

    @property
    def inputs(self):
        """The step's inputs, by name (read-only)."""
        return types.MappingProxyType(self._inputs)

    def input(self, name, default=_MISSING):
        """The value an earlier step kept under the output the host wired to
        input ``name``. Without ``default``, a missing input raises
        ``KeyError`` naming the step and the inputs it has."""
        if name in self._inputs:
            return self._inputs[name]
        if default is not _MISSING:
            return default
        have = ", ".join(sorted(self._inputs)) or "none"
        raise InputMissing("step %r has no input %r (its inputs: %s)" % (self._id, name, have))

    @property
    def dir(self):
        """A working directory for the step, inside the session directory
        (removed by cleanup). Created on first use."""
        with self._lock:
            if not self._dir_made:
                os.makedirs(self._dir, exist_ok=True)
                self._dir_made = True
        return self._dir

    @property
    def artifact_dir(self):
        """The directory for the step's artifacts, which the host fetches
        once the step ends, successful or not. It already holds
        ``cleaned_config.json``."""
        return self._artifact_dir

    @property
    def log(self):
        """A ``logging.Logger`` whose records go to the host as ``log``
        notifications (those below the session's ``log_level`` are not
        sent). Keyword ``extra={...}`` becomes the record's ``attrs``."""
        return self._log

    @property
    def cancelled(self):
        """Whether the host has cancelled the step."""
        return self._job.cancel.is_set()

    def check_cancelled(self):
        """Raise :class:`Cancelled` if the host has cancelled the step."""
        if self._job.cancel.is_set():
            raise Cancelled()

    def sleep(self, seconds):
        """Wait ``seconds``, or raise :class:`Cancelled` as soon as the step
        is cancelled."""
        if self._job.cancel.wait(max(0.0, seconds)):
            raise Cancelled()

    @property
    def rows(self):
        """The rows processed, as set by :meth:`set_rows`."""
        return self._rows

    def set_rows(self, n):
        """Record how many rows the step processed (an integer ≥ 0)."""
        if not _is_integer(n):
            raise TypeError("rows must be an integer, not %s" % type(n).__name__)
        if n < 0:
            raise ValueError("rows must be >= 0, not %d" % n)
        with self._lock:
            self._rows = int(n)

    def set_output(self, key, value):
        """Keep ``value`` in the worker under ``key`` for later steps'
        inputs. Only a summary crosses the wire: ``value.summary()`` if it has
        one, else its type and length or value (see :func:`summarize`)."""
        if not isinstance(key, str) or key == "":
            raise ValueError("output key must be a non-empty string")
        with self._lock:
            if self._done:
                raise StepFinished("step %r has already finished" % self._id)
            self._outputs[key] = value

    def event(self, name, data=None):
        """Send an event named ``name`` with ``data`` (a dict), stamped with
        the current time and the step's id."""
        if not isinstance(name, str) or name == "":
            raise ValueError("event name must be a non-empty string")
        if name in HOST_EVENTS:
            raise ValueError("event name %r is the host's own event: a worker may not send it (protocol section 6.1)" % name)
        if data is not None and not isinstance(data, collections.abc.Mapping):
            raise TypeError("event data must be a dict, not %s" % type(data).__name__)
        self._live()
        params = {"name": name, "timestamp": utc_now(), "step_id": self._id}
        if data:
            params["data"] = self._server._mask.value(_to_json(data))
        self._server._notify("event", params, strict=True)

    def metric(self, name, value, unit=None, tags=None):
        """Send a metric, stamped with the current time and the step's id.
        ``value`` is a finite number; ``tags`` a dict of strings."""
        if not isinstance(name, str) or name == "":
            raise ValueError("metric name must be a non-empty string")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError("metric value must be a number, not %s" % type(value).__name__)
        value = int(value) if isinstance(value, numbers.Integral) else float(value)
        if not math.isfinite(value):
            raise ValueError("metric value must be finite, not %r" % value)
        self._live()
        params = {"name": name, "value": value, "timestamp": utc_now(), "step_id": self._id}
        if tags:
            params["tags"] = self._server._mask.tags({str(k): str(v) for k, v in tags.items()})
        if unit:
            params["unit"] = str(unit)
        self._server._notify("metric", params, strict=True)

    def _log_record(self, record):
        self._live()
        mask = self._server._mask
        attrs = {k: v for k, v in record.__dict__.items() if k not in _STD_RECORD_KEYS and not k.startswith("_")}
        if record.exc_info and record.exc_info[0] is not None:
            attrs["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            attrs["exception"] = record.exc_text
        params = {
            "level": _wire_level(record.levelno),
            "message": mask.string(record.getMessage()),
            "timestamp": _timestamp(datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)),
            "step_id": self._id,
        }
        if attrs:
            params["attrs"] = mask.value(_to_json(attrs))
        self._server._notify("log", params, strict=True)

    def _live(self):
        if self._done:
            raise StepFinished("step %r has already finished: what it emits must reach the host before its result" % self._id)
        if self._job.cancel.is_set():
            raise Cancelled()

    def _finish(self):
        with self._lock:
            self._done = True
            return self._rows, dict(self._outputs)

    def __repr__(self):
        return "<Step %s driver=%s>" % (self._id, self._driver)


# ---------------------------------------------------------------------------
# The worker


class Worker:
    """The worker runtime: the drivers it offers and how it serves them.

    Register drivers with :meth:`driver` (a decorator) or :meth:`register`,
    then call :meth:`serve` (or :func:`main`) once, in the worker process.
    Attributes left ``None`` are read from the environment by :meth:`serve`
    (``TPROXY_HEARTBEAT_INTERVAL_MS``, ``TPROXY_MAX_FRAME_SIZE``,
    ``TPROXY_WORK_DIR``) or take their defaults.
    """

    def __init__(self, name, version, heartbeat_interval=None, max_frame_size=None, work_dir=None,
                 forward_logging=False):
        #: The worker's name and version, reported by ping.
        self.name = name
        self.version = version
        #: Seconds between heartbeats while a request is handled (≤ 2).
        self.heartbeat_interval = heartbeat_interval
        #: The frame cap in bytes, for what the worker reads and sends.
        self.max_frame_size = max_frame_size
        #: Where session directories are created.
        self.work_dir = work_dir
        #: Also send the records of Python's own loggers (``logging.getLogger``)
        #: emitted while a step runs as that step's log notifications. It adds
        #: a handler to the root logger, which prints WARNING and above to
        #: stderr outside steps; levels are the loggers' own.
        self.forward_logging = forward_logging
        self._drivers = {}
        self._methods = {}
        self._swept = False  # the work directory's stale session directories, once per Worker

    # Registration ---------------------------------------------------------

    def register(self, name, driver):
        """Make ``driver`` runnable by exec_step under ``name``. ``driver`` is
        a callable taking the :class:`Step`, or an object with a ``run(step)``
        method. Registering a name twice is an error."""
        if not isinstance(name, str) or name == "":
            raise ValueError("a driver needs a non-empty name")
        fn = driver if callable(driver) else getattr(driver, "run", None)
        if not callable(fn):
            raise TypeError("driver %r is neither callable nor has a run(step) method" % (driver,))
        if name in self._drivers:
            raise ValueError("driver %r registered twice" % name)
        self._drivers[name] = fn
        return driver

    def driver(self, name):
        """Decorator: ``@w.driver("csv_extract")`` registers the function."""
        def deco(fn):
            self.register(name, fn)
            return fn
        return deco

    def handle(self, method, fn):
        """Answer requests for a method of your own with ``fn(params)``
        (params: a dict or None), returning the JSON result. Raise
        :class:`RPCError` to answer with an error code; any other exception
        is answered -32603. Handlers run one at a time, in arrival order."""
        if not isinstance(method, str) or method == "" or method in _PROTOCOL_METHODS or method.startswith("$/"):
            raise ValueError("method %r cannot be registered" % (method,))
        if method in self._methods:
            raise ValueError("method %r registered twice" % method)
        self._methods[method] = fn

    @property
    def drivers(self):
        """The registered driver names, sorted."""
        return sorted(self._drivers)

    # Serving --------------------------------------------------------------

    def serve(self, protocol_in=None, protocol_out=None):
        """Serve one session and return the exit status: 0 once the host
        closed stdin (or sent SIGTERM) and everything was answered, 1 if
        reading stdin failed or the session stopped because writing to the
        host did (EPIPE: the host is gone).

        By default it serves the process's stdin and stdout. Before any
        driver runs, it moves the protocol to private duplicates of fds 0 and
        1, points fd 1 at stderr (and ``sys.stdout`` at ``sys.stderr``) and
        fd 0 at /dev/null: what drivers, libraries and child processes print
        cannot corrupt the protocol. Once the session has secret values to
        search for, fds 1 and 2 become a pipe that a thread copies to the
        original stderr with the secrets masked (a secret split across
        writes included); serve() restores them before it returns.

        The session stops at the end of stdin, at a failed write to stdout,
        on SIGTERM and, on Linux, when the parent process dies: the step in
        flight is cancelled and answered (``step_failed`` with
        ``error_type`` ``cancelled``, then -32800) if the host can still
        read it, the session directory is removed, and the process exits
        within 2 s even if the driver ignores the cancellation. Signals are
        handled when serve() is called from the main thread: SIGTERM and,
        when nothing asked for a parent-death signal already
        (transport.Subprocess asks for SIGTERM), SIGHUP, which it arms as
        one (prctl) and takes for the host's death only if its parent
        process is indeed gone. Before it returns, it SIGKILLs the
        processes its drivers left running: its own children and, when it
        leads its process group, the rest of the group; a group leader whose
        parent is alive leaves that to its host, which kills the group once
        the worker has exited (transport.Subprocess does).

        With ``protocol_in`` and ``protocol_out`` (file descriptors) it
        serves those instead and leaves stdio, signals and processes alone.

        Drivers run on the calling thread; a reader thread answers ping and
        acts on ``$/cancelRequest`` while they run.
        """
        own_stdio = protocol_in is None and protocol_out is None
        if own_stdio:
            protocol_in, protocol_out = take_stdio()
        elif protocol_in is None or protocol_out is None:
            raise ValueError("give both protocol_in and protocol_out, or neither")
        srv = _Server(self, protocol_in, protocol_out)
        srv._own_stdio = own_stdio
        return srv.run(install_signals=own_stdio and threading.current_thread() is threading.main_thread(),
                       own_process=own_stdio)

    def _interval(self):
        if self.heartbeat_interval is not None:
            return float(self.heartbeat_interval)
        env = os.environ.get("TPROXY_HEARTBEAT_INTERVAL_MS")
        if env:
            return float(env) / 1000.0
        return DEFAULT_HEARTBEAT_INTERVAL

    def _frame_cap(self):
        if self.max_frame_size is not None:
            return int(self.max_frame_size)
        env = os.environ.get("TPROXY_MAX_FRAME_SIZE")
        if env:
            return int(env)
        return DEFAULT_MAX_FRAME_SIZE

    def _work_dir(self):
        return self.work_dir or os.environ.get("TPROXY_WORK_DIR") or tempfile.gettempdir()


def take_stdio():
    """Move the protocol off fds 0 and 1: return private (close-on-exec)
    duplicates of them, point fd 1 at stderr and fd 0 at /dev/null, and
    rebind ``sys.stdout`` to ``sys.stderr``. :meth:`Worker.serve` calls it;
    call it yourself first thing if your module prints at import time."""
    global _taken
    if _taken is not None:
        return _taken
    try:
        sys.stdout.flush()
    except Exception:
        pass
    pin = os.dup(0)   # non-inheritable (PEP 446)
    pout = os.dup(1)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
    finally:
        os.close(null)
    sys.stdout = sys.stderr
    _taken = (pin, pout)
    return _taken


_taken = None


def main(worker):
    """Serve ``worker`` over stdio and exit the process with its status: the
    whole ``if __name__ == "__main__":`` of a worker script."""
    code = worker.serve()
    # Interpreter shutdown waits for non-daemon threads a driver may have
    # left running; the protocol says exit within a few seconds.
    t = threading.Timer(_EXIT_GRACE, _hard_exit, args=(code,))
    t.daemon = True
    t.start()
    sys.exit(code)


def _hard_exit(code):
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass
    os._exit(code)


# ---------------------------------------------------------------------------
# Leaving nothing behind: the parent-death signal, the processes drivers
# left running, session directories. The same rules as the Go runtime's
# (worker/procs_linux.go, worker/sessiondir_unix.go), so that a Python and a
# Go worker sharing a work directory honour each other's.

#: What the worker asks the kernel to send it when its parent dies, if
#: whoever started it asked for nothing (transport.Subprocess asks for
#: SIGTERM). Not SIGTERM itself: the kernel sends it when the *thread* that
#: started the worker exits, which a host may do while it lives on (a
#: thread pool's thread, say), so the worker checks that its parent really
#: is gone before it takes the signal for the host's death; a SIGTERM is
#: obeyed unconditionally.
_PARENT_DEATH_SIGNAL = getattr(signal, "SIGHUP", None)
_PR_SET_PDEATHSIG = 1
_PR_GET_PDEATHSIG = 2
_prctl_fn = None


def _prctl():
    """libc's prctl(2) through ctypes, or None where there is none: not
    Linux, no ctypes, no libc. Nothing then arms a parent-death signal; the
    worker learns of its host's death from the end of its stdin."""
    global _prctl_fn
    if _prctl_fn is None:
        _prctl_fn = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes
                fn = ctypes.CDLL(None, use_errno=True).prctl
                fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
                fn.restype = ctypes.c_int
                _prctl_fn = fn
            except (ImportError, OSError, AttributeError, TypeError):
                pass
    return _prctl_fn or None


def _parent_death_signal():
    """The process's parent-death signal (0: none), or None where it
    cannot be read."""
    prctl = _prctl()
    if prctl is None:
        return None
    import ctypes
    cur = ctypes.c_int(0)
    if prctl(_PR_GET_PDEATHSIG, ctypes.addressof(cur), 0, 0, 0) != 0:
        return None
    return cur.value


def _set_parent_death_signal(sig):
    """Set the process's parent-death signal; whether it was set."""
    prctl = _prctl()
    return prctl is not None and prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def _arm_parent_death(install):
    """Unless the process has a parent-death signal already, call
    ``install()`` (which makes _PARENT_DEATH_SIGNAL harmless: handled) and
    arm that signal, and report whether it did. ``install`` returns a
    function that undoes it, called when arming fails."""
    if _PARENT_DEATH_SIGNAL is None or _parent_death_signal() != 0:
        return False
    undo = install()
    if undo is None:
        return False
    if _set_parent_death_signal(_PARENT_DEATH_SIGNAL):
        return True
    undo()
    return False


#: The kernel's PF_EXITING: the process is in exit(2), set before its file
#: descriptors are closed.
_PF_EXITING = 0x4

_ProcStat = collections.namedtuple("_ProcStat", "pid ppid pgrp state flags")


def _parse_stat(pid, b):
    """Parse the text of /proc/<pid>/stat. The command name, in
    parentheses, may hold spaces and parentheses itself: the fields start
    after the last ')'."""
    i = b.rfind(b")")
    if i < 0:
        return None
    f = b[i + 1:].split()  # from field 3, state
    if len(f) < 7 or len(f[0]) != 1:
        return None
    try:
        return _ProcStat(pid, int(f[1]), int(f[2]), f[0].decode("ascii"), int(f[6]))
    except (ValueError, UnicodeDecodeError):
        return None


def _read_stat(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return _parse_stat(pid, f.read())
    except OSError:
        return None


def _parent_alive(ppid):
    """Whether ppid is still this process's parent and is not exiting. A
    parent killed by SIGKILL closes its end of the worker's stdin before the
    kernel reparents the worker, so the end of the input may be read while
    getppid still names the dying parent: its PF_EXITING flag, set before
    its descriptors are closed, tells."""
    if os.getppid() != ppid:
        return False
    st = _read_stat(ppid)
    return st is not None and st.state not in "ZX" and not st.flags & _PF_EXITING


def _scan_procs():
    """Every process in /proc."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    out = []
    for n in names:
        if n.isdigit():
            st = _read_stat(int(n))
            if st is not None:
                out.append(st)
    return out


def _ours(st, self_pid, leader):
    return st.ppid == self_pid or (leader and st.pgrp == self_pid)


def _kill_proc(p, self_pid, leader):
    """SIGKILL p. Through a pidfd where the kernel and Python have them: p
    is checked again once the pidfd pins it, so that a pid reused since the
    scan is never signalled."""
    pidfd_open = getattr(os, "pidfd_open", None)
    send = getattr(signal, "pidfd_send_signal", None)
    fd = None
    if pidfd_open is not None and send is not None:
        try:
            fd = pidfd_open(p.pid)
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EPERM):
                return False  # gone
    if fd is None:
        try:
            os.kill(p.pid, signal.SIGKILL)
            return True
        except OSError:
            return False
    try:
        st = _read_stat(p.pid)
        if st is None or not _ours(st, self_pid, leader):
            return False
        send(fd, signal.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _end_children(ppid, diag=None):
    """SIGKILL the processes the worker's drivers left running: the
    worker's children and, when the worker leads its process group (as
    transport.Subprocess starts it), every other member of the group,
    wherever it was reparented. A process that left the group and is no
    child of the worker (setsid, a double fork) is out of reach: that is
    what daemonizing asks for. No group is ever signalled as a whole.

    A worker that leads its own group while its parent, which ppid was at
    start, is alive and not exiting leaves this to that parent:
    transport.Subprocess kills the group once the worker has exited, and
    the scan reads /proc for every process on the machine. When the parent
    is dying or dead (its death is what stopped the worker) nobody else
    can, and a worker in someone else's group ends its own children.

    It scans /proc a few rounds, so that a process forked while a round
    killed its parent is caught by the next, and returns once a round
    finds nothing alive or after about 100 ms. Where there is no /proc it
    does nothing. Returns how many processes it killed (a process a round
    signalled that is not dead yet by the next is signalled again, and
    counted once)."""
    if not os.path.isdir("/proc/self"):
        return 0
    self_pid = os.getpid()
    try:
        leader = os.getpgrp() == self_pid
    except OSError:
        leader = False
    if leader and _parent_alive(ppid):
        return 0
    killed = set()
    for rnd in range(5):
        alive = 0
        for p in _scan_procs():
            if p.pid == self_pid or p.state in "ZX" or not _ours(p, self_pid, leader):
                continue
            alive += 1
            if _kill_proc(p, self_pid, leader):
                killed.add(p.pid)
        if alive == 0:
            break
        time.sleep((rnd + 1) * 0.005)  # let the kills land
    if killed and diag is not None:
        diag("killed %d processes drivers left running" % len(killed))
    return len(killed)


# Session directories are named tproxy-<session id>-<random> in the work
# directory. On POSIX each holds an owner file that its worker keeps locked
# (flock) for as long as the directory is in use: the kernel drops the lock
# when the process ends, however it ends, so a directory whose lock can be
# taken has no live owner, and a later worker's first prepare removes it
# once it is old enough.
_DIR_PREFIX = "tproxy-"
_OWNER_FILE = ".tproxy-owner"
_SWEEP_MARKER = ".tproxy-swept"  # in the work directory: when it was last swept
#: Sweeps of a work directory are spaced: listing a busy temporary
#: directory costs time, and stale directories appear only when workers
#: are killed outright.
_SWEEP_EVERY = 3600.0
#: How old (seconds, by its owner file's mtime) a session directory
#: without a live owner must be before a sweep removes it. The age keeps
#: the sweep away from a directory being set up (its owner file exists a
#: moment before it is locked) and from a filesystem whose locks are not
#: shared between processes (some network filesystems).
_STALE_AGE = 24 * 3600.0


def _lock_dir(d):
    """Create d's owner file and lock it; return its fd (closing it
    unlocks), or None where there is no flock."""
    if fcntl is None:
        return None
    fd = os.open(os.path.join(d, _OWNER_FILE), os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # For a person looking at the directory; the lock is what counts.
        os.write(fd, b"pid %d\n" % os.getpid())
    except BaseException:
        os.close(fd)
        raise
    return fd


def _sweep_due(root, now):
    """Whether root was last swept _SWEEP_EVERY ago or more (or never); if
    so, mark it swept now. Two workers may both sweep; removals are safe
    against that (_remove_if_owner_gone)."""
    marker = os.path.join(root, _SWEEP_MARKER)
    try:
        age = now - os.stat(marker).st_mtime
        # A marker from the future (a clock set back) does not count.
        if 0 <= age < _SWEEP_EVERY:
            return False
    except OSError:
        pass
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644))
        os.utime(marker, (now, now))
    except OSError:  # another user's: sweep every time
        pass
    return True


def _sweep_stale(root, now, diag=None):
    """Remove the session directories under root whose owner is gone and
    whose owner file is older than _STALE_AGE. One without an owner file is
    left alone: this runtime did not make it, or it is being made."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for n in names:
        if not n.startswith(_DIR_PREFIX):
            continue
        d = os.path.join(root, n)
        try:
            st = os.lstat(os.path.join(d, _OWNER_FILE))
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < _STALE_AGE:
            continue
        if _remove_if_owner_gone(d) and diag is not None:
            diag("removed a stale session directory %s (%d s old)" % (d, now - st.st_mtime))


def _remove_if_owner_gone(d):
    """Remove d if its owner file's lock can be taken, holding the lock
    while it does."""
    try:
        fd = os.open(os.path.join(d, _OWNER_FILE), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live owner, or a lock this filesystem cannot take
        shutil.rmtree(d, ignore_errors=True)
        return not os.path.lexists(d)
    finally:
        os.close(fd)


def _sweep(root, diag=None):
    """Remove root's stale session directories, at most once an hour per
    root; nothing where there is no flock to tell a stale one from a live
    one."""
    if fcntl is None:
        return
    now = time.time()
    if _sweep_due(root, now):
        _sweep_stale(root, now, diag)


class _Job:
    __slots__ = ("id", "key", "method", "params", "cancel", "answered")

    def __init__(self, id, method, params):
        self.id = id
        self.key = _id_key(id)
        self.method = method
        self.params = params
        self.cancel = threading.Event()
        self.answered = False


def _id_key(id):
    return ("s", id) if isinstance(id, str) else ("n", id)


def _valid_request_id(v):
    return isinstance(v, str) or (_is_number(v) and (not isinstance(v, float) or math.isfinite(v)))


#: How long serve() waits, at its end, for the stderr filter to copy what
#: was written before it (a child process still holding the pipe keeps it
#: open; this bounds the wait).
_STDERR_DRAIN = 1.0


class _StderrFilter:
    """Masks the session's secrets in everything written to fds 1 and 2,
    by the runtime, drivers, libraries and child processes alike (the Go
    runtime's worker/stderrmask.go): both become a pipe that a daemon
    thread copies to the original stderr, masking as it goes. A secret
    split across writes is masked however far apart the writes come, and
    so is one in a line of any length: the thread holds back only what
    could be the start of a form of a secret (Masker.mask_prefix), until
    the next bytes decide it or the pipe ends (close). ``masker`` is a
    function returning the masker to use, asked at each read."""

    def __init__(self, masker):
        self._masker = masker
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:
                pass
        self._orig = os.dup(2)  # close-on-exec (PEP 446)
        r, w = os.pipe()
        try:
            os.dup2(w, 2)
            os.dup2(w, 1)
        except OSError:
            os.dup2(self._orig, 2)
            os.dup2(self._orig, 1)
            os.close(self._orig)
            os.close(r)
            raise
        finally:
            os.close(w)
        self._r = r
        self._done = threading.Event()
        # A fatal error's report (faulthandler, when enabled) goes straight
        # to the original stderr: never lost, at the price of not masked.
        try:
            import faulthandler
            if faulthandler.is_enabled():
                faulthandler.enable(self._orig)
        except Exception:
            pass
        threading.Thread(target=self._copy, name="tproxy-stderr-mask", daemon=True).start()

    def _copy(self):
        pending = b""
        try:
            while True:
                try:
                    data = os.read(self._r, 64 * 1024)
                except OSError:
                    data = b""
                final = not data
                pending += data
                try:
                    out, n = self._masker().mask_prefix(pending, final)
                except Exception:  # a masking bug must neither leak nor stall: replace what is pending
                    out, n = _MASKED_B + b"\n", len(pending)
                self._write(out)
                pending = pending[n:]
                if final:
                    return
        finally:
            try:
                os.close(self._r)
            except OSError:
                pass
            self._done.set()

    def _write(self, b):
        view = memoryview(b)
        while view:
            try:
                view = view[os.write(self._orig, view):]
            except OSError:
                return  # stderr has nowhere else to report it

    def close(self, wait=_STDERR_DRAIN):
        """Point fds 1 and 2 back at the original stderr, which closes this
        process's write ends of the pipe, and wait up to ``wait`` seconds
        for the thread to copy what was written, held bytes included."""
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:
                pass
        try:
            os.dup2(self._orig, 2)
            os.dup2(self._orig, 1)
        except OSError:
            pass
        self._done.wait(wait)


class _Session:
    def __init__(self):
        self.id = None
        self.prepared = False
        self.cleaned = False
        self.dir = None
        self.config = {}
        self.level = logging.INFO
        self.attempts = 0
        self.executed = 0
        self.total_rows = 0
        self.outputs = None  # step id -> {key: value}
        self.artifact_limits = (0, 0)  # prepare's max_files, max_file_bytes; 0: none


class _Server:
    """One session's runtime over a pair of file descriptors."""

    def __init__(self, worker, fd_in, fd_out):
        self.w = worker
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.cap = worker._frame_cap()
        self.interval = worker._interval()
        self._wlock = threading.Lock()
        self._closed = False
        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._inflight = {}
        self._eof = False
        self._read_error = None
        self._terminating = False
        self._stop_why = None  # why the session stopped, first cause only
        self._stop_code = 0  # the exit status that cause calls for
        self._grace_timer = None  # _abandon, once the session stopped
        self._exit_mu = threading.Lock()  # run's exit or _abandon's, never both at once
        self._finished = False  # run's exit is done: nothing to abandon
        self._own_process = False
        self._ppid = os.getppid()
        self._out_closed = False
        self._dir_mu = threading.Lock()  # hands the session directory over to whoever removes it
        self._owner_fd = None  # the session directory's locked owner file
        self._mask = _NoMask()
        self._own_stdio = False  # serve() took the process's stdio: mask fds 1 and 2
        self._stderr_filter = None
        self._filter_mu = threading.Lock()
        self._sess = _Session()
        self._step = None  # the running Step, if any
        # heartbeats
        self._hb_cond = threading.Condition()
        self._hb_active = False
        self._hb_sending = False
        self._hb_last = 0.0
        self._hb_step = None
        self._hb_stop = False

    # Output ---------------------------------------------------------------

    def _write(self, data):
        """Write one or more frames with one write under the lock; False if
        the connection is closed."""
        with self._wlock:
            if self._closed:
                return False
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self.fd_out, view)
                    view = view[n:]
                return True
            except OSError as e:
                self._closed = True
                err = e
        self._diag("writing to the host failed (%s); the connection is closed, stopping" % err)
        # Nothing more can reach the host (EPIPE: it is gone, or closed its
        # end of the worker's output): the session stops as at the end of
        # the input.
        self._terminate("writing to the host failed: %s" % err, hard_exit=self._own_process, code=1)
        return False

    def _notify(self, method, params, strict=False):
        """Send a notification. strict: raise FrameTooLarge instead of
        dropping an oversize one."""
        b = _encode({"jsonrpc": "2.0", "method": method, "params": params})
        if len(b) > self.cap:
            msg = "%s notification is %d bytes, over the frame cap of %d; not sent" % (method, len(b), self.cap)
            if strict:
                raise FrameTooLarge(msg)
            self._diag(msg)
            return
        self._write(b + b"\n")

    def _reply(self, id, result=None, error=None):
        if error is None:
            try:
                b = _encode({"jsonrpc": "2.0", "id": id, "result": result})
            except (TypeError, ValueError) as e:
                error = (INTERNAL_ERROR, "encoding the result: %s" % e, None)
            else:
                if len(b) > self.cap:
                    error = (INTERNAL_ERROR, "the result is %d bytes, over the frame cap of %d" % (len(b), self.cap), None)
                else:
                    self._write(b + b"\n")
                    return
        code, message, data = error
        err = {"code": code, "message": self._mask.string(message)}
        if data is not None:
            err["data"] = data
        try:
            b = _encode({"jsonrpc": "2.0", "id": id, "error": err})
        except (TypeError, ValueError):
            b = _encode({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": self._mask.string(message)}})
        if len(b) > self.cap:
            err.pop("data", None)
            err["message"] = err["message"][:1024]
            b = _encode({"jsonrpc": "2.0", "id": id, "error": err})
        self._write(b + b"\n")

    def _event(self, name, data=None, step_id=None):
        params = {"name": name, "timestamp": utc_now()}
        if step_id:
            params["step_id"] = step_id
        if data:
            params["data"] = self._mask.value(_to_json(data))
        self._notify("event", params)

    def _metric(self, name, value, step_id=None, unit=None):
        params = {"name": name, "value": value, "timestamp": utc_now()}
        if step_id:
            params["step_id"] = step_id
        if unit:
            params["unit"] = unit
        self._notify("metric", params)

    def _diag(self, msg):
        """A diagnostic of the runtime's own, to stderr, secrets masked."""
        try:
            sys.stderr.write(self._mask.string("tproxy-worker: %s\n" % msg))
            sys.stderr.flush()
        except Exception:
            pass

    def _mask_stderr(self):
        """Once the session has secrets and serve() owns the process's
        stdio, mask them in fds 1 and 2 (_StderrFilter)."""
        if not self._own_stdio or not self._mask.has_values:
            return
        with self._filter_mu:
            if self._stderr_filter is not None:
                return
            try:
                self._stderr_filter = _StderrFilter(lambda: self._mask)
            except OSError as e:
                self._diag("cannot mask secrets in stderr: %s" % e)

    def _unmask_stderr(self, wait=_STDERR_DRAIN):
        """Stop masking fds 1 and 2, copying out what the filter holds."""
        with self._filter_mu:
            f, self._stderr_filter = self._stderr_filter, None
        if f is not None:
            f.close(wait)

    # Main loop ------------------------------------------------------------

    def run(self, install_signals, own_process=None):
        """Serve until the session stops; return the exit status.
        install_signals: handle SIGTERM and the parent-death signal (main
        thread only). own_process: the process is the worker's, to exit
        within the stop grace and to leave no driver's process behind."""
        self._own_process = install_signals if own_process is None else own_process
        self._ppid = os.getppid()
        restore_signals = self._install_signals() if install_signals else None
        fwd = None
        if self.w.forward_logging:
            fwd = _ForwardHandler(self)
            logging.getLogger().addHandler(fwd)
        reader = threading.Thread(target=self._read_loop, name="tproxy-reader", daemon=True)
        beater = threading.Thread(target=self._heartbeat_loop, name="tproxy-heartbeat", daemon=True)
        reader.start()
        beater.start()
        try:
            self._execute_loop()
        finally:
            # Under _exit_mu: the process must not exit under an _abandon
            # halfway through, nor _abandon exit it under this.
            with self._exit_mu:
                with self._hb_cond:
                    self._hb_stop = True
                    self._hb_cond.notify_all()
                if fwd is not None:
                    logging.getLogger().removeHandler(fwd)
                self._remove_session_dir()
                self._close_out()
                if self._own_process:
                    _end_children(self._ppid, self._diag)
                self._unmask_stderr()
                if restore_signals is not None:
                    restore_signals()
                # From here the caller bounds the exit (main: _EXIT_GRACE).
                self._finished = True
                if self._grace_timer is not None:
                    self._grace_timer.cancel()
        return self._exit_code()

    def _exit_code(self):
        return 1 if self._read_error is not None or self._stop_code else 0

    def _close_out(self):
        """Close the protocol's output, once: the host reads EOF."""
        with self._wlock:
            self._closed = True
            if self._out_closed:
                return
            self._out_closed = True
            try:
                os.close(self.fd_out)
            except OSError:
                pass

    def _install_signals(self):
        """Handle SIGTERM and, where it can be armed, the parent-death
        signal; return a function that restores the previous handlers, or
        None if no handler could be installed."""
        # The handler only writes a byte: a thread of ours does the work,
        # so that no lock is taken inside a signal handler.
        r, wfd = os.pipe()
        os.set_blocking(wfd, False)

        def on_signal(signum, frame):
            try:
                os.write(wfd, b"H" if signum == _PARENT_DEATH_SIGNAL else b"T")
            except OSError:
                pass

        prev = {}
        try:
            prev[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_signal)
        except (ValueError, OSError):
            os.close(r)
            os.close(wfd)
            return None

        def install_parent_death():
            try:
                prev[_PARENT_DEATH_SIGNAL] = signal.signal(_PARENT_DEATH_SIGNAL, on_signal)
            except (ValueError, OSError):
                return None
            return lambda: signal.signal(_PARENT_DEATH_SIGNAL, prev.pop(_PARENT_DEATH_SIGNAL) or signal.SIG_DFL)

        _arm_parent_death(install_parent_death)
        threading.Thread(target=self._watch_signals, args=(r,), name="tproxy-signals", daemon=True).start()

        def restore():
            # The pipe stays open: a signal arriving now must not write
            # into an fd that was closed and reused.
            for sig, handler in prev.items():
                try:
                    signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
                except (ValueError, OSError):
                    pass
        return restore

    def _watch_signals(self, r):
        while True:
            try:
                b = os.read(r, 1)
            except OSError:
                return
            if not b:
                return
            if b == b"T":
                self._diag("SIGTERM: cancelling and exiting")
                self._terminate("the worker received SIGTERM")
            elif os.getppid() != self._ppid:
                self._diag("the parent process died: cancelling and exiting")
                self._terminate("the worker's parent process died")
            else:
                # The thread that started this process exited; the process
                # that owns it lives on, and so does the session.
                self._diag("parent-death signal with the parent process alive; ignored")

    def _terminate(self, why, hard_exit=True, code=0):
        """Stop the session: the request running is cancelled, those queued
        are answered -32800 without running. The first cause is the one the
        running request's answer names and whose exit status (code) counts.
        hard_exit: the process exits within _TERM_GRACE whatever the
        driver does (_abandon)."""
        with self._cond:
            if self._stop_why is None:
                self._stop_why, self._stop_code = why, code
            self._terminating = True
            queued = list(self._queue)
            self._queue.clear()
            for jobs in self._inflight.values():
                for j in jobs:
                    j.cancel.set()
            self._cond.notify_all()
            timer = None
            if hard_exit and self._grace_timer is None:
                timer = self._grace_timer = threading.Timer(_TERM_GRACE, self._abandon)
                timer.daemon = True
        for j in queued:
            self._finish_job(j, error=(REQUEST_CANCELLED, "%s cancelled: %s" % (j.method, why), None))
        if timer is not None:
            timer.start()

    def _abandon(self):
        """The stop grace has passed and a request still runs: its driver
        ignores the cancellation. It is abandoned, unanswered, and the
        process exits under it, leaving neither its session directory nor
        its drivers' processes behind."""
        # Held until the process exits. Bounded: run's exit may itself be
        # stuck, behind a write the host never reads.
        if self._exit_mu.acquire(timeout=_TERM_GRACE) and self._finished:
            self._exit_mu.release()
            return
        self._diag("a request still runs %g s after the session stopped; abandoning it" % _TERM_GRACE)
        # Children first: a driver waiting on one wakes up when it dies and
        # may write into the session directory, which is removed after.
        if self._own_process:
            _end_children(self._ppid, self._diag)
        self._remove_session_dir()
        self._unmask_stderr(_STDERR_DRAIN / 2)
        _hard_exit(self._exit_code())

    def _execute_loop(self):
        while True:
            with self._cond:
                while not self._queue and not self._eof and not self._terminating:
                    self._cond.wait()
                if self._terminating or not self._queue:
                    return
                job = self._queue.popleft()
            if job.cancel.is_set():
                self._finish_job(job, error=(REQUEST_CANCELLED, "%s cancelled by the host" % job.method, None))
                continue
            self._hb_start()
            try:
                try:
                    result, error = self._dispatch(job), None
                except _Answer as a:
                    result, error = None, a.error
                except Exception as e:  # a bug of the runtime's: answer, go on
                    self._diag("%s failed:\n%s" % (job.method, traceback.format_exc()))
                    result, error = None, (INTERNAL_ERROR, "%s: internal error: %s" % (job.method, e), None)
            finally:
                # Heartbeats stop before the answer is written, so none
                # follows the response it was vouching for.
                self._hb_stop_beating()
            self._finish_job(job, result=result, error=error)

    def _finish_job(self, job, result=None, error=None):
        with self._cond:
            if job.answered:
                return
            job.answered = True
            jobs = self._inflight.get(job.key)
            if jobs is not None:
                if job in jobs:
                    jobs.remove(job)
                if not jobs:
                    del self._inflight[job.key]
        self._reply(job.id, result=result, error=error)

    # Input ----------------------------------------------------------------

    def _frames(self):
        """Yield ("line", bytes) for each line of input (without its line
        ending) and ("oversize", size) for a line over the cap, which is
        discarded without being buffered whole."""
        buf = bytearray()
        scan = 0
        discarding = False
        dropped = 0
        limit = self.cap + 1  # the content, plus a '\r' that may precede '\n'
        while True:
            try:
                chunk = os.read(self.fd_in, 65536)
            except OSError as e:
                self._diag("reading from the host failed: %s" % e)
                self._read_error = e
                chunk = b""
            if not chunk:
                if discarding:
                    yield ("oversize", dropped + len(buf))
                elif buf.strip(b" \t\r\n"):
                    line = bytes(buf)
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    if len(line) > self.cap:
                        yield ("oversize", len(line))
                    else:
                        yield ("line", line)
                return
            buf += chunk
            while True:
                i = buf.find(b"\n", scan)
                if i < 0:
                    if discarding:
                        dropped += len(buf)
                        del buf[:]
                        scan = 0
                    elif len(buf) > limit:
                        discarding, dropped = True, len(buf)
                        del buf[:]
                        scan = 0
                    else:
                        scan = len(buf)
                    break
                line = bytes(buf[:i])
                del buf[:i + 1]
                scan = 0
                if discarding:
                    discarding = False
                    yield ("oversize", dropped + len(line))
                    continue
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > self.cap:
                    yield ("oversize", len(line))
                else:
                    yield ("line", line)

    def _read_loop(self):
        try:
            for kind, payload in self._frames():
                if kind == "oversize":
                    self._reply(None, error=(INVALID_REQUEST, "invalid request: a frame of %d bytes or more is over the cap of %d bytes" % (payload, self.cap), None))
                    continue
                try:
                    self._handle_line(payload)
                except Exception:
                    self._diag("handling a message failed:\n" + traceback.format_exc())
        except Exception:
            self._diag("the reader failed:\n" + traceback.format_exc())
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()
            # The end of the input stops the session (protocol section 8):
            # the request running is cancelled, those queued are answered
            # -32800 without running; a process of its own exits within
            # _TERM_GRACE even if a driver ignores the cancel.
            # (A read error also ends here; its exit status is 1.)
            self._terminate("the host closed the worker's input", hard_exit=self._own_process)

    def _handle_line(self, line):
        if not line.strip(b" \t\r\n"):
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            self._reply(None, error=(PARSE_ERROR, "parse error: the line is not valid UTF-8 (%s)" % e.reason, None))
            return
        try:
            msg = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            self._reply(None, error=(PARSE_ERROR, "parse error: %s" % e, None))
            return
        if not isinstance(msg, dict):
            self._reply(None, error=(INVALID_REQUEST, "invalid request: a message must be a JSON object, not %s" % _json_type(msg), None))
            return
        has_id = "id" in msg
        rid = msg.get("id")
        echo_id = rid if _valid_request_id(rid) else None
        if msg.get("jsonrpc") != "2.0":
            self._reply(echo_id, error=(INVALID_REQUEST, 'invalid request: jsonrpc must be "2.0"', None))
            return
        if "method" not in msg and ("result" in msg or "error" in msg):
            return  # a response: this worker sends no requests
        method = msg.get("method")
        if not isinstance(method, str):
            self._reply(echo_id, error=(INVALID_REQUEST, "invalid request: method must be a string", None))
            return
        if has_id and not _valid_request_id(rid):
            self._reply(None, error=(INVALID_REQUEST, "invalid request: id must be a string or a number, not %s" % _json_type(rid), None))
            return
        params = msg.get("params")
        if not has_id:
            if method == "$/cancelRequest" and isinstance(params, dict) and _valid_request_id(params.get("id")):
                self._cancel_request(params["id"])
            return  # other notifications are ignored
        if method == "ping":
            self._ping(rid, params)
            return
        if method not in _PROTOCOL_METHODS and method not in self.w._methods:
            self._reply(rid, error=(METHOD_NOT_FOUND, "method %s not found" % json.dumps(method), None))
            return
        if params is not None and not isinstance(params, dict):
            self._reply(rid, error=(INVALID_PARAMS, "%s: invalid params: params must be an object, not %s" % (method, _json_type(params)), None))
            return
        job = _Job(rid, method, params)
        with self._cond:
            if not self._terminating:
                self._inflight.setdefault(job.key, []).append(job)
                self._queue.append(job)
                self._cond.notify_all()
                return
        self._reply(rid, error=(REQUEST_CANCELLED, "%s cancelled: the worker is terminating" % method, None))

    def _cancel_request(self, id):
        key = _id_key(id)
        queued = []
        with self._cond:
            for job in list(self._inflight.get(key, ())):
                job.cancel.set()
                if job in self._queue:
                    self._queue.remove(job)
                    queued.append(job)
        for job in queued:  # never run: answered at once
            self._finish_job(job, error=(REQUEST_CANCELLED, "%s cancelled by the host" % job.method, None))

    def _ping(self, rid, params):
        if params is not None and not isinstance(params, dict):
            self._reply(rid, error=(INVALID_PARAMS, "ping: invalid params: params must be an object", None))
            return
        data = (params or {}).get("data")
        if data is not None and not isinstance(data, str):
            self._reply(rid, error=(INVALID_PARAMS, "ping: invalid params: data must be a string", None))
            return
        self._reply(rid, result={
            "status": "pong",
            "echo": data or "",
            "timestamp": utc_now(),
            "protocol": PROTOCOL_VERSION,
            "worker": {"name": self.w.name, "version": self.w.version, "drivers": self.w.drivers},
        })

    # Heartbeats -----------------------------------------------------------

    def _hb_start(self):
        with self._hb_cond:
            self._hb_active = True
            self._hb_last = time.monotonic()
            self._hb_step = None
            self._hb_cond.notify_all()

    def _hb_set_step(self, step_id):
        with self._hb_cond:
            self._hb_step = step_id

    def _hb_stop_beating(self):
        with self._hb_cond:
            self._hb_active = False
            self._hb_step = None
            self._hb_cond.notify_all()
            # A beat already being written finishes first.
            while self._hb_sending:
                self._hb_cond.wait()

    def _heartbeat_loop(self):
        with self._hb_cond:
            while not self._hb_stop:
                if not self._hb_active:
                    self._hb_cond.wait()
                    continue
                due = self._hb_last + self.interval - time.monotonic()
                if due > 0:
                    self._hb_cond.wait(due)
                    continue
                self._hb_last = time.monotonic()
                params = {"timestamp": utc_now()}
                if self._hb_step:
                    params["step_id"] = self._hb_step
                self._hb_sending = True
                self._hb_cond.release()
                try:
                    self._notify("heartbeat", params)
                finally:
                    self._hb_cond.acquire()
                    self._hb_sending = False
                    self._hb_cond.notify_all()

    # Methods --------------------------------------------------------------

    def _dispatch(self, job):
        p = job.params or {}
        try:
            if job.method == "prepare":
                return self._prepare(p)
            if job.method == "exec_step":
                return self._exec_step(job, p)
            if job.method == "cleanup":
                return self._cleanup()
            if job.method == "fetch_artifact":
                return self._fetch_artifact(p)
            return self._custom(job)
        except _ParamsError as e:
            raise _Answer(INVALID_PARAMS, "%s: invalid params: %s" % (job.method, e))

    def _custom(self, job):
        fn = self.w._methods[job.method]
        try:
            return _to_json(fn(job.params))
        except RPCError as e:
            raise _Answer(e.code, e.message, _to_json(e.data) if e.data is not None else None)
        except Exception as e:
            self._diag("method %s failed:\n%s" % (job.method, traceback.format_exc()))
            raise _Answer(INTERNAL_ERROR, "%s: %s" % (job.method, e))

    def _not_prepared(self, method):
        ss = self._sess
        if ss.cleaned:
            return _Answer(NOT_PREPARED, "%s after cleanup of session %s" % (method, json.dumps(ss.id)))
        return _Answer(NOT_PREPARED, "%s before prepare" % method)

    def _prepare(self, p):
        session_id = _req(p, "session_id", str)
        manifest = _req(p, "manifest", dict)
        config = _opt(p, "config", dict) or {}
        log_level = _opt(p, "log_level", str)
        secrets = _opt(p, "secrets", dict) or {}
        limits = _opt(p, "artifact_limits", dict) or {}
        for k in ("max_files", "max_file_bytes"):
            v = limits.get(k)
            if v is not None and (not _is_integer(v) or v < 0):
                raise _ParamsError("artifact_limits.%s must be an integer >= 0, not %s" % (k, json.dumps(v)))
        keys = _opt(secrets, "keys", list, "secrets.keys") or []
        pointers = _opt(secrets, "pointers", list, "secrets.pointers") or []
        steps = _req(manifest, "steps", list, "manifest.steps")
        _opt(manifest, "pipeline", dict, "manifest.pipeline")
        for i, st in enumerate(steps):
            where = "manifest.steps[%d]" % i
            if not isinstance(st, dict):
                raise _ParamsError("%s must be an object, not %s" % (where, _json_type(st)))
            _req(st, "id", str, where + ".id")
            _req(st, "driver", str, where + ".driver")
            _opt(st, "config", dict, where + ".config")
            needs = _opt(st, "needs", list, where + ".needs") or []
            if not all(isinstance(n, str) for n in needs):
                raise _ParamsError("%s.needs must be an array of strings" % where)
            for name, ref in (_opt(st, "inputs", dict, where + ".inputs") or {}).items():
                _check_ref(ref, "%s.inputs.%s" % (where, name))
        if not all(isinstance(k, str) for k in keys):
            raise _ParamsError("secrets.keys must be an array of strings")
        _check_id(session_id, "session id")
        ss = self._sess
        if ss.id is not None and ss.id != session_id:
            raise _Answer(SESSION_MISMATCH, "this worker serves session %s and cannot prepare session %s: one worker, one session"
                          % (json.dumps(ss.id), json.dumps(session_id)))
        seen = set()
        drivers = set()
        for i, st in enumerate(steps):
            _check_id(st["id"], "manifest step %d: step id" % i)
            if st["id"] in seen:
                raise _ParamsError("manifest step id %s appears twice" % json.dumps(st["id"]))
            seen.add(st["id"])
            if st["driver"] not in self.w._drivers:
                raise self._unknown_driver(st["id"], st["driver"])
            drivers.add(st["driver"])
        try:
            masker = Masker(keys, pointers)
        except ValueError as e:
            raise _ParamsError(str(e))
        level = logging.INFO
        if log_level:  # "" or null: the default
            if log_level.lower() not in _LOG_LEVELS:
                raise _ParamsError("log_level %s: use debug, info, warn or error" % json.dumps(log_level))
            level = _LOG_LEVELS[log_level.lower()]
        # Learn every secret the session will see before anything is sent.
        masker.learn(config)
        for st in steps:
            masker.learn(st.get("config") or {})
        if ss.dir is None:
            try:
                self._create_dir(session_id)
            except OSError as e:
                raise _Answer(INTERNAL_ERROR, "creating the session directory: %s" % e)
        ss.id, ss.prepared, ss.cleaned = session_id, True, False
        ss.config, ss.level = config, level
        ss.artifact_limits = (int(limits.get("max_files") or 0), int(limits.get("max_file_bytes") or 0))
        if ss.outputs is None:
            ss.outputs = {}
        self._mask = masker
        self._mask_stderr()
        self._event("session_initialized", {"session_id": session_id, "steps_total": len(steps)})
        self._metric("steps_total", len(steps))
        return {"status": "ready", "session_id": session_id, "session_dir": ss.dir, "drivers_loaded": sorted(drivers)}

    def _unknown_driver(self, step_id, driver):
        return _Answer(UNKNOWN_DRIVER, "step %s: no driver %s in this worker (it has: %s)"
                       % (json.dumps(step_id), json.dumps(driver), ", ".join(self.w.drivers)))

    def _exec_step(self, job, p):
        ss = self._sess
        if not ss.prepared:
            raise self._not_prepared("exec_step")
        step_id = _req(p, "step_id", str)
        driver = _req(p, "driver", str)
        config = _opt(p, "config", dict) or {}
        refs = _opt(p, "inputs", dict) or {}
        for name, ref in refs.items():
            _check_ref(ref, "inputs.%s" % name)
        _check_id(step_id, "step id")
        fn = self.w._drivers.get(driver)
        if fn is None:
            raise self._unknown_driver(step_id, driver)
        inputs = {}
        for name, ref in refs.items():
            outs = ss.outputs.get(ref["from_step"])
            if outs is None or ref["key"] not in outs:
                if outs is None:
                    why = "step %s has not run in session %s" % (json.dumps(ref["from_step"]), json.dumps(ss.id))
                else:
                    why = "step %s kept no output %s (it kept: %s)" % (
                        json.dumps(ref["from_step"]), json.dumps(ref["key"]), ", ".join(sorted(outs)) or "none")
                raise _Answer(INPUT_UNAVAILABLE, "step %s: input %s: %s" % (json.dumps(step_id), json.dumps(name), why))
            inputs[name] = outs[ref["key"]]

        art_dir = os.path.join(ss.dir, "artifacts", step_id)
        try:
            _write_cleaned_config(art_dir, self._mask.config(config))
        except OSError as e:
            raise _Answer(INTERNAL_ERROR, "step %s: writing %s: %s" % (json.dumps(step_id), CLEANED_CONFIG_FILE, e))
        self._mask_stderr()  # the step's config may have named the session's first secrets

        ss.attempts += 1
        step = Step(self, job, step_id, driver, ss.attempts, config, inputs, ss.id, ss.config,
                    os.path.join(ss.dir, "steps", step_id), art_dir, ss.level)
        start = time.perf_counter()
        self._event("step_start", {"driver": driver, "step_number": ss.attempts}, step_id)
        self._hb_set_step(step_id)
        self._step = step
        exc = None
        fatal = None
        try:
            fn(step)
        except Exception as e:
            exc = e
        except Cancelled as e:
            exc = e
        except BaseException as e:  # KeyboardInterrupt, SystemExit, ...: reported, then re-raised
            exc = fatal = e
        finally:
            self._step = None
            rows, outputs = step._finish()
        duration = round((time.perf_counter() - start) * 1000.0, 3)
        artifacts = self._list_artifacts(step_id, art_dir)
        if exc is not None:
            err = self._step_failed(job, step, exc, duration, artifacts)
            if fatal is not None:
                self._finish_job(job, error=err)
                raise fatal
            raise _Answer(*err)

        ss.executed += 1
        ss.total_rows += rows
        ss.outputs[step_id] = outputs
        if rows != 0:
            self._metric("rows_processed", rows, step_id)
        self._metric("step_duration_ms", duration, step_id, unit="ms")
        data = {"driver": driver, "rows_processed": rows, "duration_ms": duration}
        if outputs:
            data["outputs"] = sorted(outputs)
        self._event("step_complete", data, step_id)
        result = {"status": "complete", "step_id": step_id, "rows_processed": rows, "duration_ms": duration}
        if outputs:
            result["outputs"] = {k: self._summary(k, v) for k, v in outputs.items()}
        if artifacts:
            result["artifacts"] = artifacts
        return result

    def _summary(self, key, value):
        try:
            return self._mask.value(_to_json(summarize(value)))
        except Exception as e:
            self._diag("summary of output %r failed: %s" % (key, e))
            return {"type": type(value).__name__}

    def _step_failed(self, job, step, exc, duration, artifacts):
        """Report a failed step (stderr, step_failed) and return its error.

        A step whose cancellation had come when its driver raised was
        cancelled, whatever the driver made of it (a connection it closed
        failing in its own way): ``error_type`` ``cancelled`` and -32800.
        A cancel that comes after the driver raised does not change the
        failure, which is answered -32004 with its own type (section 7)."""
        cancel_seen = job.cancel.is_set() and not isinstance(exc, (KeyboardInterrupt, SystemExit))
        cancelled = cancel_seen or _caused_by_cancel(exc)
        error_type = ERROR_CANCELLED if cancelled else _error_type(exc)
        message = str(exc) if not isinstance(exc, SystemExit) else "exit status %s" % (exc.code,)
        if not message:
            message = type(exc).__name__
        message = self._mask.string(message)
        data = {"driver": step.driver, "error_type": error_type, "message": message, "duration_ms": duration}
        if not cancelled:
            tb = self._mask.string("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            self._diag("step %s (driver %s) failed:\n%s" % (json.dumps(step.id), step.driver, tb.rstrip()))
            if len(tb) > _MAX_TRACEBACK:
                tb = "...\n" + tb[-_MAX_TRACEBACK:]
            data["traceback"] = tb
        self._event("step_failed", data, step.id)
        failure = {"step_id": step.id, "error_type": error_type, "message": message}
        if artifacts:
            failure["artifacts"] = artifacts
        if cancel_seen:
            # The failure goes with the -32800 too: the host still fetches
            # the artifacts the cancelled step left (protocol section 7).
            why = self._stop_why
            return (REQUEST_CANCELLED, "exec_step cancelled: %s" % why if why else "exec_step cancelled by the host", failure)
        return (STEP_FAILED, "step %s failed: %s" % (json.dumps(step.id), message), failure)

    def _list_artifacts(self, step_id, art_dir):
        def refuse(path, reason, count=1):
            self._diag("step %s: artifact %s refused: %s" % (step_id, path, reason))
            data = {"path": path, "reason": reason}
            if count > 1:
                data["count"] = count  # the host counts the files left out in status.json
            self._event("artifact_refused", data, step_id)

        max_files, max_file_bytes = self._sess.artifact_limits
        try:
            return list_artifacts(art_dir, refuse, max_files, max_file_bytes)
        except OSError as e:
            refuse(".", "listing the artifact directory: %s" % e)
            return []

    def _cleanup(self):
        ss = self._sess
        if not ss.prepared:
            raise self._not_prepared("cleanup")
        self._event("session_cleanup", {"session_id": ss.id, "steps_executed": ss.executed, "total_rows": ss.total_rows})
        self._remove_session_dir()
        ss.prepared, ss.cleaned = False, True
        ss.outputs = None
        return {"status": "cleaned", "session_id": ss.id, "steps_executed": ss.executed, "total_rows": ss.total_rows}

    def _create_dir(self, session_id):
        """Sweep the work directory's stale session directories (once per
        Worker), then create the session's directory and lock its owner
        file."""
        root = self.w._work_dir()
        if not self.w._swept:
            self.w._swept = True
            _sweep(root, self._diag)
        d = tempfile.mkdtemp(prefix="%s%s-" % (_DIR_PREFIX, session_id), dir=root)
        try:
            fd = _lock_dir(d)
        except OSError:
            shutil.rmtree(d, ignore_errors=True)
            raise
        with self._dir_mu:
            self._sess.dir, self._owner_fd = d, fd

    def _remove_session_dir(self):
        """Remove the session directory and forget it; then unlock its
        owner file (until it is removed, no sweep may take it). Safe from
        any thread: the stop grace's timer may call it while a stuck driver
        still runs."""
        with self._dir_mu:
            d, fd = self._sess.dir, self._owner_fd
            self._sess.dir, self._owner_fd = None, None
        if d:
            shutil.rmtree(d, ignore_errors=True)
            if os.path.lexists(d):
                self._diag("removing the session directory %s failed" % d)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _fetch_artifact(self, p):
        ss = self._sess
        if not ss.prepared:
            raise self._not_prepared("fetch_artifact")
        step_id = _req(p, "step_id", str)
        path = _req(p, "path", str)
        offset = _req_int(p, "offset")
        length = _req_int(p, "length")
        _check_id(step_id, "step id")
        try:
            check_artifact_path(path)
        except ValueError as e:
            raise _ParamsError(str(e))
        if offset < 0 or length < 0:
            raise _ParamsError("negative offset %d or length %d" % (offset, length))
        n = ARTIFACT_CHUNK if length == 0 or length > ARTIFACT_CHUNK else length
        art_dir = os.path.join(ss.dir, "artifacts", step_id)
        if not os.path.isdir(art_dir):
            raise _Answer(INVALID_PARAMS, "fetch_artifact: step %s has no artifacts in session %s" % (json.dumps(step_id), json.dumps(ss.id)))
        try:
            fd = _open_inside(art_dir, path)
        except (OSError, ValueError) as e:
            raise _Answer(INVALID_PARAMS, "fetch_artifact: step %s: %s: %s" % (json.dumps(step_id), json.dumps(path), e))
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, n, offset) if offset < size else b""
        except OSError as e:
            raise _Answer(INTERNAL_ERROR, "fetch_artifact: step %s: reading %s: %s" % (json.dumps(step_id), json.dumps(path), e))
        finally:
            os.close(fd)
        return {"data": base64.b64encode(data).decode("ascii"), "eof": offset + len(data) >= size}


class _Answer(Exception):
    """An error answer to the request being handled."""

    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.error = (code, message, data)


def _error_type(exc):
    """The ``error_type`` a step that raised ``exc`` fails with, unless it
    was cancelled: its own non-empty string ``error_type`` attribute, else
    ``panic`` for a ``BaseException`` outside ``Exception``, ``timeout``
    for a ``TimeoutError``, else ``driver``. Never a class name, which
    would tell the host's reader nothing and change with the code."""
    et = getattr(exc, "error_type", None)
    if isinstance(et, str) and et:
        return et
    if not isinstance(exc, Exception):
        return ERROR_PANIC
    if isinstance(exc, TimeoutError):
        return ERROR_TIMEOUT
    return ERROR_DRIVER


def _caused_by_cancel(exc):
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Cancelled):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _req(obj, key, typ, name=None):
    v = obj.get(key)
    if v is None:
        raise _ParamsError("%s is required" % (name or key))
    if not isinstance(v, typ) or (typ is str and not isinstance(v, str)):
        raise _ParamsError("%s must be %s, not %s" % (name or key, _type_word(typ), _json_type(v)))
    return v


def _opt(obj, key, typ, name=None):
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, typ):
        raise _ParamsError("%s must be %s, not %s" % (name or key, _type_word(typ), _json_type(v)))
    return v


def _req_int(obj, key):
    v = obj.get(key)
    if v is None:
        raise _ParamsError("%s is required" % key)
    if not _is_integer(v):
        raise _ParamsError("%s must be an integer, not %s" % (key, json.dumps(v) if _is_number(v) else _json_type(v)))
    return int(v)


def _type_word(typ):
    return {str: "a string", dict: "an object", list: "an array"}.get(typ, typ.__name__)


def _check_id(v, kind):
    try:
        validate_id(v, kind)
    except ValueError as e:
        raise _ParamsError(str(e))


def _check_ref(ref, where):
    if not isinstance(ref, dict):
        raise _ParamsError("%s must be an object, not %s" % (where, _json_type(ref)))
    _check_id(_req(ref, "from_step", str, where + ".from_step"), where + ".from_step")
    _req(ref, "key", str, where + ".key")


def _write_cleaned_config(art_dir, cfg):
    os.makedirs(art_dir, exist_ok=True)
    data = (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode("utf-8")
    path = os.path.join(art_dir, CLEANED_CONFIG_FILE)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        # A symlink (or something else) a driver left under that name.
        if os.path.lexists(path) and not os.path.isdir(path):
            os.unlink(path)
        fd = os.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _inside(root, real):
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _open_inside(art_dir, rel):
    """Open rel, a clean relative path, for reading only if it resolves to a
    regular file inside art_dir (symlinks included). Return the fd."""
    root = os.path.realpath(art_dir)
    real = os.path.realpath(os.path.join(root, *rel.split("/")))
    if not _inside(root, real) or real == root:
        raise ValueError("resolves outside the step's artifact directory")
    fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _sha256_file(path, limit=0):
    """Return the file's size and SHA-256; with a limit (> 0), stop reading
    past it: the size then exceeds the limit and the digest is None."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
            size += len(b)
            if limit and size > limit:
                return size, None
    return size, h.hexdigest()


#: cleaned_config.json is listed up to this size whatever prepare's
#: max_file_bytes (docs/protocol.md section 10).
_MAX_CLEANED_CONFIG_BYTES = 1 << 20


def list_artifacts(art_dir, refuse=None, max_files=0, max_file_bytes=0):
    """Describe the regular files under ``art_dir``: a list of ``{"path",
    "size", "sha256"}`` sorted by path ('/'-separated). A symlink is listed
    only when it resolves to a regular file inside the directory; anything
    else that is not a regular file or directory is left out and reported
    to ``refuse(path, reason)``, or ``refuse(path, reason, count)`` for a
    refusal that stands for ``count`` files.

    ``max_files`` and ``max_file_bytes`` (> 0) are prepare's
    ``artifact_limits`` (docs/protocol.md section 10): a file over
    ``max_file_bytes`` is refused without being hashed; the listing holds at
    most ``max_files`` files, the first in path order with
    cleaned_config.json always among them, and one refusal (path ".") says
    how many more were left out."""
    refuse = refuse or (lambda path, reason, count=1: None)
    root = os.path.realpath(art_dir)
    out = []
    # slots: files besides cleaned_config.json the listing may still take.
    state = {"slots": max_files, "left": 0}
    cleaned_path = os.path.join(art_dir, CLEANED_CONFIG_FILE)
    if max_files and os.path.isfile(cleaned_path) and not os.path.islink(cleaned_path):
        state["slots"] -= 1

    def walk(dirpath, prefix):
        with os.scandir(dirpath) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            rel = prefix + e.name
            cleaned = rel == CLEANED_CONFIG_FILE
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if max_files and not cleaned and not is_dir and state["slots"] <= 0:
                # Counted, not looked at.
                state["left"] += 1
                continue
            shown = os.fsencode(rel).decode("utf-8", "replace")
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                refuse(shown, "file name is not valid UTF-8")
                continue
            try:
                if e.is_symlink():
                    real = os.path.realpath(e.path)
                    if not _inside(root, real):
                        refuse(rel, "symlink does not resolve inside the artifact directory")
                        continue
                    if not os.path.isfile(real):
                        refuse(rel, "symlink to something other than a regular file")
                        continue
                elif e.is_dir(follow_symlinks=False):
                    walk(e.path, rel + "/")
                    continue
                elif not e.is_file(follow_symlinks=False):
                    refuse(rel, "not a regular file")
                    continue
                try:
                    check_artifact_path(rel)
                except ValueError as err:
                    refuse(rel, str(err))
                    continue
                cap = _MAX_CLEANED_CONFIG_BYTES if cleaned and max_file_bytes else max_file_bytes
                size = os.stat(e.path).st_size
                digest = None
                if not cap or size <= cap:
                    size, digest = _sha256_file(e.path, cap)
                if digest is None:
                    refuse(rel, "%d bytes is over the host's cap of %d bytes per file (artifact_limits.max_file_bytes): not listed" % (size, cap))
                    continue
            except OSError as err:
                refuse(rel, "cannot read it: %s" % err)
                continue
            out.append({"path": rel, "size": size, "sha256": digest})
            if not cleaned:
                state["slots"] -= 1

    walk(art_dir, "")
    if state["left"]:
        refuse(".", "%d more files were left out of the listing: the host takes at most %d files per step (artifact_limits.max_files)"
               % (state["left"], max_files), state["left"])
    out.sort(key=lambda a: a["path"])
    return out


class _ForwardHandler(logging.Handler):
    """Worker.forward_logging: records of Python's loggers emitted while a
    step runs become that step's log notifications."""

    def __init__(self, server):
        super().__init__()
        self._server = server
        self._local = threading.local()

    def emit(self, record):
        if record.name.startswith("tproxy.step."):
            return
        step = self._server._step
        if step is not None and not step._done and record.levelno >= step._log.level:
            if getattr(self._local, "busy", False):
                return
            self._local.busy = True
            try:
                step._log_record(record)
            except (Cancelled, StepFinished, FrameTooLarge):
                pass
            finally:
                self._local.busy = False
        elif step is None and record.levelno >= logging.WARNING and logging.getLogger().handlers == [self]:
            # Outside steps, do what logging's last resort would have done
            # had this handler not been there.
            try:
                sys.stderr.write(self._server._mask.string(self.format(record)) + "\n")
            except Exception:
                pass


# ---------------------------------------------------------------------------
# Conformance drivers (docs/protocol.md section 13)


def _config_int(step, key, default=0):
    v = step.config.get(key, default)
    if v is None:
        v = default
    if not _is_integer(v):
        raise ValueError("config.%s must be an integer, not %r" % (key, v))
    return int(v)


def _conform_emit(step):
    n = _config_int(step, "events")
    for i in range(n):
        step.event("conform_tick", {"i": i})
    step.set_rows(n)
    step.set_output("count", n)


def _conform_sleep(step):
    step.sleep(_config_int(step, "ms") / 1000.0)


def _conform_fail(step):
    raise StepError(str(step.config.get("message", "")), error_type="conform_failure")


def _conform_artifacts(step):
    files = step.config.get("files") or {}
    if not isinstance(files, dict):
        raise ValueError("config.files must be an object of strings")
    for rel, contents in files.items():
        check_artifact_path(rel)
        if not isinstance(contents, str):
            raise ValueError("config.files.%s must be a string" % rel)
        path = os.path.join(step.artifact_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(contents.encode("utf-8"))


def _conform_stdout(step):
    text = str(step.config.get("text", ""))
    print(text)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if sys.__stdout__ is not None:
        sys.__stdout__.write(text + "\n")
        sys.__stdout__.flush()
    os.write(1, (text + "\n").encode("utf-8"))
    if os.path.exists("/bin/sh"):  # a child process writing to its fd 1
        import subprocess
        subprocess.run(["/bin/sh", "-c", 'printf "%s\\n" "$1"', "sh", text], check=False)


def _conform_input(step):
    step.event("conform_input", {"value": step.input("in")})


def register_conformance_drivers(worker):
    """Register the conformance drivers of docs/protocol.md section 13 on
    ``worker``: conform.emit, conform.sleep, conform.fail, conform.artifacts,
    conform.stdout and conform.input."""
    worker.register("conform.emit", _conform_emit)
    worker.register("conform.sleep", _conform_sleep)
    worker.register("conform.fail", _conform_fail)
    worker.register("conform.artifacts", _conform_artifacts)
    worker.register("conform.stdout", _conform_stdout)
    worker.register("conform.input", _conform_input)
    return worker


def conformance_worker():
    """The worker this file runs as a script: the conformance drivers."""
    return register_conformance_drivers(Worker("tproxy-python-conformance", __version__))


if __name__ == "__main__":
    main(conformance_worker())
