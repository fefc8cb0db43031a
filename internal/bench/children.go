package bench

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/transport"
)

// RSS is what a host process used to persist a stream of events.
type RSS struct {
	// Events is how many events were streamed.
	Events int `json:"events"`
	// PeakRSS is the process's peak resident set (VmHWM), in bytes.
	PeakRSS int64 `json:"peak_rss"`
	// Seconds is how long the stream took.
	Seconds float64 `json:"seconds"`
}

// HostRSS runs a tproxy host in a child process (its worker is a
// grandchild), streams n events from one step into events.jsonl, and
// reports the host process's peak RSS.
func HostRSS(n int) (RSS, error) {
	var r RSS
	err := runChild("host-rss", strconv.Itoa(n), &r)
	return r, err
}

// RawRSS is HostRSS for the raw stream: the peak RSS of a process that
// appends n raw lines from a child to a buffered file.
func RawRSS(n int) (RSS, error) {
	var r RSS
	err := runChild("raw-rss", strconv.Itoa(n), &r)
	return r, err
}

func hostRSSChild(arg string) error {
	return rssChild(arg, func(dir string) (func(int) error, func() error, error) {
		h, err := StartHost(dir)
		if err != nil {
			return nil, nil, err
		}
		return h.Stream, h.Close, nil
	})
}

func rawRSSChild(arg string) error {
	return rssChild(arg, func(dir string) (func(int) error, func() error, error) {
		r, err := StartRawStream(dir)
		if err != nil {
			return nil, nil, err
		}
		return r.Stream, r.Close, nil
	})
}

func rssChild(arg string, start func(dir string) (stream func(int) error, closeFn func() error, err error)) error {
	n, err := strconv.Atoi(arg)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tproxy-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	stream, closeFn, err := start(dir)
	if err != nil {
		return err
	}
	t0 := time.Now()
	err = stream(n)
	secs := time.Since(t0).Seconds()
	if err = errors.Join(err, closeFn()); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(RSS{Events: n, PeakRSS: procStatus("VmHWM"), Seconds: secs})
}

// Sessions is what idle sessions cost.
type Sessions struct {
	// Sessions is how many were open.
	Sessions int `json:"sessions"`
	// BytesPerSession is the growth of live heap plus goroutine stacks,
	// after a GC, divided by Sessions.
	BytesPerSession int64 `json:"bytes_per_session"`
	// GoroutinesPerSession is the growth of the goroutine count divided
	// by Sessions.
	GoroutinesPerSession float64 `json:"goroutines_per_session"`
	// RSSPerSession is the growth of the resident set divided by
	// Sessions.
	RSSPerSession int64 `json:"rss_per_session"`
}

// IdleSessions opens n sessions over the in-memory transport in a child
// process (host and worker runtime both in it: handshake done, session
// prepared, nothing running) and reports what each costs.
func IdleSessions(n int) (Sessions, error) {
	var s Sessions
	err := runChild("sessions", strconv.Itoa(n), &s)
	return s, err
}

func sessionsChild(arg string) error {
	n, err := strconv.Atoi(arg)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tproxy-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	w := Worker()
	w.WorkDir = dir
	ctx := context.Background()
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "s", Driver: "noop"}}}

	// One session first, so that lazily built package state is not
	// counted.
	warm, err := host.Start(ctx, &transport.InMemory{Serve: w.Serve})
	if err != nil {
		return err
	}
	defer warm.Close()
	g0, mem0, rss0 := usage()
	clients := make([]*host.Client, 0, n)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range n {
		c, err := host.Start(ctx, &transport.InMemory{Serve: w.Serve})
		if err != nil {
			return err
		}
		clients = append(clients, c)
		if _, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: "bench", Manifest: m}); err != nil {
			return err
		}
	}
	g1, mem1, rss1 := usage()
	return json.NewEncoder(os.Stdout).Encode(Sessions{
		Sessions:             n,
		BytesPerSession:      (mem1 - mem0) / int64(n),
		GoroutinesPerSession: float64(g1-g0) / float64(n),
		RSSPerSession:        (rss1 - rss0) / int64(n),
	})
}

// usage returns the goroutine count, live heap plus stacks after a GC, and
// the resident set.
func usage() (goroutines int, mem, rss int64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), int64(ms.HeapAlloc + ms.StackInuse), procStatus("VmRSS")
}
