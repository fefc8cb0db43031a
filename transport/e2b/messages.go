package e2b

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"github.com/tproxy/tproxy/transport"
)

// The envd process service's messages in proto3 JSON (lowerCamelCase
// names, bytes as standard base64, zero values omitted), from
// spec/envd/process/process.proto.

type processConfig struct {
	Cmd  string            `json:"cmd"`
	Args []string          `json:"args,omitempty"`
	Envs map[string]string `json:"envs,omitempty"`
	Cwd  string            `json:"cwd,omitempty"`
}

type startRequest struct {
	Process processConfig `json:"process"`
	// Stdin unset means enabled; false disables it.
	Stdin *bool `json:"stdin,omitempty"`
}

type processSelector struct {
	Pid uint32 `json:"pid"`
}

type processInput struct {
	Stdin []byte `json:"stdin"`
}

type streamInputRequest struct {
	Start *struct {
		Process processSelector `json:"process"`
	} `json:"start,omitempty"`
	Data *struct {
		Input processInput `json:"input"`
	} `json:"data,omitempty"`
	Keepalive *struct{} `json:"keepalive,omitempty"`
}

type processRequest struct {
	Process processSelector `json:"process"`
	Signal  string          `json:"signal,omitempty"`
}

// startResponse is one message of the Start stream.
type startResponse struct {
	Event processEvent `json:"event"`
}

type processEvent struct {
	Start *struct {
		Pid uint32 `json:"pid"`
	} `json:"start,omitempty"`
	Data *struct {
		Stdout []byte `json:"stdout,omitempty"`
		Stderr []byte `json:"stderr,omitempty"`
		Pty    []byte `json:"pty,omitempty"`
	} `json:"data,omitempty"`
	End       *endEvent `json:"end,omitempty"`
	Keepalive *struct{} `json:"keepalive,omitempty"`
}

// endEvent is ProcessEvent.EndEvent. envd fills it from Go's
// os.ProcessState: ExitCode() (-1 when killed by a signal), Exited(),
// String() ("exit status 3", "signal: killed"), and the error of
// cmd.Wait.
type endEvent struct {
	ExitCode int32   `json:"exitCode"`
	Exited   bool    `json:"exited"`
	Status   string  `json:"status"`
	Error    *string `json:"error,omitempty"`
}

// UnmarshalJSON accepts the proto field names too (exit_code), as proto3
// JSON parsers must, and an int given as a string.
func (e *endEvent) UnmarshalJSON(b []byte) error {
	var raw struct {
		ExitCode  json.RawMessage `json:"exitCode"`
		ExitCode2 json.RawMessage `json:"exit_code"`
		Exited    bool            `json:"exited"`
		Status    string          `json:"status"`
		Error     *string         `json:"error"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	code := raw.ExitCode
	if code == nil {
		code = raw.ExitCode2
	}
	if len(code) > 0 && string(code) != "null" {
		s := strings.Trim(string(code), `"`)
		n, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return fmt.Errorf("e2b: end event: exitCode %s: %w", code, err)
		}
		e.ExitCode = int32(n)
	}
	e.Exited, e.Status, e.Error = raw.Exited, raw.Status, raw.Error
	return nil
}

// decodeEvent decodes one Start stream message. Exactly one of the event's
// members must be set.
func decodeEvent(payload []byte) (*processEvent, error) {
	var r startResponse
	if err := json.Unmarshal(payload, &r); err != nil {
		return nil, fmt.Errorf("e2b: malformed process event %q: %w", truncate(payload, 100), err)
	}
	ev := &r.Event
	n := 0
	for _, set := range []bool{ev.Start != nil, ev.Data != nil, ev.End != nil, ev.Keepalive != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("e2b: process event with %d members, want 1: %q", n, truncate(payload, 100))
	}
	return ev, nil
}

// exitStatus turns an end event into the status the subprocess transport
// would report for the same exit: "exit status 3" is Code 3, "signal:
// killed" is Code -1 with Signal SIGKILL. Anything else (envd's own
// errors, such as a deadline) is Code -1 with the error as Reason.
func (e *endEvent) exitStatus() transport.ExitStatus {
	if name, ok := strings.CutPrefix(e.Status, "signal: "); ok {
		name = strings.TrimSuffix(name, " (core dumped)")
		if sig := signalByName(name); sig != 0 {
			return transport.ExitStatus{Code: -1, Signal: sig}
		}
	}
	if e.Exited {
		return transport.ExitStatus{Code: int(e.ExitCode)}
	}
	if s, ok := strings.CutPrefix(e.Status, "exit status "); ok {
		if n, err := strconv.Atoi(s); err == nil {
			return transport.ExitStatus{Code: n}
		}
	}
	reason := e.Status
	if e.Error != nil && *e.Error != "" {
		reason = *e.Error
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
