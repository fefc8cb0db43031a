//go:build !linux

package transport

import "syscall"

// setParentDeath does nothing: outside Linux there is no parent-death
// signal here, and a worker learns of its host's death from the end of
// its stdin.
func setParentDeath(*syscall.SysProcAttr) {}

// lockStartThread does nothing: without a parent-death signal, the
// forking thread's life does not matter.
func lockStartThread() (unlock func()) { return func() {} }
