//go:build !unix

package worker

import (
	"log/slog"
	"os"
)

// Outside Unix there is no flock: a session directory is created and
// removed, nothing more. It has no owner file, and no sweep removes the
// directories of workers killed outright; those stay until someone
// removes them (os.TempDir's own cleanup, where there is one).

// sweep does nothing outside Unix: without a lock there is no telling a
// stale session directory from a live one.
func sweep(string, *slog.Logger) {}

// lockDir locks nothing outside Unix; releaseDir closes no owner file.
func lockDir(string) (*os.File, error) { return nil, nil }
