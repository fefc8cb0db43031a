package transport

import (
	"errors"

	"golang.org/x/sys/unix"
)

// waitExitedNoReap blocks until process pid has exited, leaving it a
// zombie for os/exec to reap. It reports false if it could not wait.
func waitExitedNoReap(pid int) bool {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil
	}
}
