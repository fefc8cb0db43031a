package e2b

import (
	"time"

	"github.com/tproxy/tproxy/transport"
)

// How the worker got into the sandbox: Info.Worker.
const (
	workerUploaded   = "uploaded"
	workerFound      = "found"
	workerInTemplate = "template"
)

// Info describes the sandbox behind a worker that E2B.Start or Pool.Start
// started, and what it cost. InfoOf returns it; a host that records
// transport facts gets the same value, for status.json, from the
// process's TransportInfo method (see InfoOf).
type Info struct {
	// SandboxID is the sandbox's id; Template the template it was
	// created from; EnvdVersion the version of its daemon.
	SandboxID   string `json:"sandbox_id"`
	Template    string `json:"template"`
	EnvdVersion string `json:"envd_version"`
	// Pid is the worker's process id inside the sandbox.
	Pid int `json:"pid"`
	// Worker says how the worker got there: "uploaded", "found" (a file
	// with the same sha256 was already executable at E2B.RemotePath) or
	// "template" (E2B.WorkerPath).
	Worker string `json:"worker"`
	// BytesUploaded counts the worker's and the input files' bytes sent
	// into the sandbox.
	BytesUploaded int64 `json:"bytes_uploaded"`
	// Pooled is true when the sandbox came warm from a Pool; Create and
	// Upload then happened before the session asked and are zero here,
	// and Wait is how long the session waited for the sandbox.
	Pooled bool `json:"pooled,omitempty"`
	// Created is when the control plane created the sandbox; Killed when
	// it answered the sandbox's kill (zero until Close killed it).
	Created time.Time `json:"created"`
	Killed  time.Time `json:"killed,omitzero"`
	// SandboxSeconds is what E2B bills: the sandbox's life from Created to
	// Killed, or to now while it lives.
	SandboxSeconds float64 `json:"sandbox_seconds"`
	// Create, Upload, Start and Wait are how long the phases of the start
	// took: the sandbox's creation, the worker's check or upload with the
	// input files, the worker's start until envd reported its pid, and a
	// Pool's wait for a warm sandbox.
	Create time.Duration `json:"create_ns"`
	Upload time.Duration `json:"upload_ns"`
	Start  time.Duration `json:"start_ns"`
	Wait   time.Duration `json:"wait_ns,omitempty"`
}

// InfoOf returns the Info of p, a Process that E2B.Start or Pool.Start
// returned, and false for any other Process.
//
// The same Process has a method TransportInfo() any, which returns the
// Info as well: a host that knows nothing of this package can record it
// (its JSON form) through an interface{ TransportInfo() any } assertion.
func InfoOf(p transport.Process) (Info, bool) {
	pp, ok := p.(*process)
	if !ok {
		return Info{}, false
	}
	return pp.snapshot(), true
}

// TransportInfo returns the Info of the process, for hosts that record
// what a transport knows without importing it.
func (p *process) TransportInfo() any { return p.snapshot() }

func (p *process) snapshot() Info {
	p.mu.Lock()
	info := p.info
	p.mu.Unlock()
	end := info.Killed
	if end.IsZero() {
		end = time.Now()
	}
	if !info.Created.IsZero() {
		info.SandboxSeconds = end.Sub(info.Created).Seconds()
	}
	return info
}
