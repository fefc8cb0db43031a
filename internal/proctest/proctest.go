// Package proctest holds what the tests of several packages need to watch
// processes from outside: whether one has exited, read from Linux's /proc.
// It is for tests only.
package proctest

import (
	"os"
	"strconv"
	"strings"
)

// Exited reports whether pid has exited: gone from /proc, or a zombie
// nobody reaped. The state is the field after the command name, which is
// in parentheses and may hold spaces and parentheses itself.
func Exited(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}
