//go:build !unix && !windows

package worker

import "os"

// repointStdout points os.Stdout at stderr, leaving the original file to
// the protocol. syscall.Stdout is a constant here.
func repointStdout() { os.Stdout = os.Stderr }
