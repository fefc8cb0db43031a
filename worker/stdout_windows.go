package worker

import (
	"os"
	"syscall"

	"golang.org/x/sys/windows"
)

// repointStdout points os.Stdout, syscall.Stdout and the process's
// standard output handle at stderr, leaving the original handle to the
// protocol.
func repointStdout() {
	os.Stdout = os.Stderr
	syscall.Stdout = syscall.Stderr
	windows.SetStdHandle(windows.STD_OUTPUT_HANDLE, windows.Handle(syscall.Stderr))
}
