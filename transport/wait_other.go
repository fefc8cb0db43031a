//go:build unix && !linux

package transport

// waitExitedNoReap reports false: outside Linux there is no portable way to
// wait for a child without reaping it, so the process group is killed
// after the reap.
func waitExitedNoReap(pid int) bool { return false }
