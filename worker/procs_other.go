//go:build unix && !linux

package worker

import (
	"log/slog"
	"syscall"
)

// parentDeathSignal is unused outside Linux.
const parentDeathSignal = syscall.SIGHUP

// armParentDeath reports false: outside Linux there is no parent-death
// signal, and the worker learns of its host's death from the end of its
// stdin.
func armParentDeath() bool { return false }

// endChildren does nothing outside Linux, where there is no /proc to find
// the drivers' processes in; the host's transport kills the worker's
// process group once it has exited.
func endChildren(*slog.Logger, int) {}
