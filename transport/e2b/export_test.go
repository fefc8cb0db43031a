package e2b

import "github.com/tproxy/tproxy/transport"

// Backlogged reports whether p, a Process E2B.Start returned, is handing
// the host output the host has not read: the state in which Close waits
// for the worker's end before it sends CloseStdin.
func Backlogged(p transport.Process) bool { return p.(*process).delivering.Load() }
