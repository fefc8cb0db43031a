package worker

import "golang.org/x/sys/unix"

// dup2 is dup2(2); linux/arm64 has only dup3.
func dup2(oldfd, newfd int) error { return unix.Dup3(oldfd, newfd, 0) }
