package e2b

import (
	"strconv"
	"strings"
	"syscall"

	processpb "github.com/tproxy/tproxy/internal/e2benvd/process"
	"github.com/tproxy/tproxy/transport"
)

// exitStatus turns envd's end event into the status the subprocess
// transport would report for the same exit. envd fills the event from Go's
// os.ProcessState: ExitCode() (-1 when killed by a signal), Exited(),
// String() ("exit status 3", "signal: killed") and the error of
// cmd.Wait. So "exit status 3" is Code 3, "signal: killed" is Code -1
// with Signal SIGKILL, and anything else (envd's own errors, such as a
// deadline) is Code -1 with the error as Reason.
func exitStatus(e *processpb.ProcessEvent_EndEvent) transport.ExitStatus {
	if name, ok := strings.CutPrefix(e.GetStatus(), "signal: "); ok {
		name = strings.TrimSuffix(name, " (core dumped)")
		if sig := signalByName(name); sig != 0 {
			return transport.ExitStatus{Code: -1, Signal: sig}
		}
	}
	if e.GetExited() {
		return transport.ExitStatus{Code: int(e.GetExitCode())}
	}
	if s, ok := strings.CutPrefix(e.GetStatus(), "exit status "); ok {
		if n, err := strconv.Atoi(s); err == nil {
			return transport.ExitStatus{Code: n}
		}
	}
	reason := e.GetStatus()
	if e.GetError() != "" {
		reason = e.GetError()
	}
	if reason == "" {
		reason = "the process ended without an exit status"
	}
	return transport.ExitStatus{Code: -1, Reason: reason}
}

// signalByName maps Go's signal description ("killed", "terminated") back
// to the signal, as os.ProcessState.String wrote it.
func signalByName(name string) syscall.Signal {
	for s := syscall.Signal(1); s < 65; s++ {
		if s.String() == name {
			return s
		}
	}
	return 0
}
