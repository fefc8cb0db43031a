//go:build !unix

package host_test

import (
	"os"
	"time"
)

// killPID kills the process pid.
func killPID(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

// stopSelf cannot stop this process outside Unix (there is no SIGSTOP):
// it blocks the calling goroutine only, and the runtime goes on reading,
// writing and beating. The tests that need a frozen worker (the "hang"
// driver) assume Unix.
func stopSelf() { time.Sleep(time.Hour) }

// maxRSSKiB has no getrusage to go on outside Unix.
func maxRSSKiB() (int64, bool) { return 0, false }
