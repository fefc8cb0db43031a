// Package check holds the protocol's rules for ids, event names and
// artifact paths (docs/protocol.md), shared by the host and the worker
// runtime.
package check

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"path/filepath"
	"strings"
)

// maxIDLen bounds session and step ids, which name files and directories.
const maxIDLen = 128

// ID checks a session or step id: 1 to 128 characters from
// [A-Za-z0-9._-], starting with a letter or digit. Ids name files and
// directories on both sides, so nothing else is accepted. kind names the id
// in the error, e.g. "session id".
func ID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("%s is empty", kind)
	}
	if len(id) > maxIDLen {
		return fmt.Errorf("%s %.20q... is %d bytes long, over the limit of %d", kind, id, len(id), maxIDLen)
	}
	for i, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			i > 0 && (r == '.' || r == '_' || r == '-')
		if !ok {
			return fmt.Errorf("%s %q: character %q at %d is not allowed (use letters, digits, '.', '_', '-', starting with a letter or digit)", kind, id, r, i)
		}
	}
	return nil
}

// hostEvents are the names of the events only the host writes: the
// tproxy Event* constants documented "(host", which TestHostEventsReserved
// in the root package keeps this list equal to. A worker's event of one of
// these names would pass for the host's (docs/protocol.md section 6.1).
var hostEvents = map[string]bool{
	"run_start": true, "phase_complete": true, "step_skipped": true, "step_timeout": true, "step_retry": true,
	"artifact_skipped": true, "protocol_warning": true, "run_complete": true, "run_failed": true,
}

// EventName refuses an event name a worker may not send: empty, or one of
// the host's own. The worker runtime applies it before sending, the host
// when it receives.
func EventName(name string) error {
	switch {
	case name == "":
		return errors.New("name: empty")
	case hostEvents[name]:
		return fmt.Errorf("name: %q is the host's own event", name)
	}
	return nil
}

// ArtifactPath refuses an artifact path that is not a clean relative
// path inside the artifact directory: empty, absolute, with ".." or "."
// elements, backslashes, or NUL bytes. Both sides apply it: the worker
// before reading, the host before writing.
func ArtifactPath(p string) error {
	switch {
	case p == "":
		return errors.New("artifact path is empty")
	case strings.ContainsAny(p, "\\\x00"):
		return fmt.Errorf("artifact path %q contains a backslash or NUL byte", p)
	case path.IsAbs(p) || filepath.IsAbs(p):
		return fmt.Errorf("artifact path %q is absolute; artifact paths are relative to the step's artifact directory", p)
	case p == ".":
		return errors.New(`artifact path "." names the artifact directory itself, not a file`)
	case path.Clean(p) != p || !fs.ValidPath(p):
		return fmt.Errorf("artifact path %q is not a clean relative path (no \"..\", \".\" or empty elements): it would escape the artifact directory", p)
	}
	return nil
}

// LogLevel reads prepare's log_level (docs/protocol.md): one of the
// contract's four names in any case, or empty for info. slog's own parser
// would also take "info+2" and the like, which no other worker knows.
func LogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log_level %q is none of debug, info, warn, error", s)
}
