//go:build unix

package transport

import "time"

// SetStderrGrace sets how long a Subprocess started afterwards waits for
// stderr EOF once its process group is gone, and returns a func that
// restores the old value. Not for parallel tests.
func SetStderrGrace(d time.Duration) (restore func()) {
	old := stderrGrace
	stderrGrace = d
	return func() { stderrGrace = old }
}
