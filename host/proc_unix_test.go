//go:build unix

package host_test

import (
	"os"
	"runtime"
	"syscall"
)

// killPID sends SIGKILL to the process pid.
func killPID(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// stopSelf stops this process (SIGSTOP): it reads, writes and beats no
// more, like a process wedged in a syscall.
func stopSelf() { syscall.Kill(os.Getpid(), syscall.SIGSTOP) }

// maxRSSKiB is this process's peak resident set size in KiB, per
// getrusage(2).
func maxRSSKiB() (int64, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	if runtime.GOOS == "darwin" || runtime.GOOS == "ios" {
		return int64(ru.Maxrss) / 1024, true // bytes there
	}
	return int64(ru.Maxrss), true
}
