package wiretest_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/transport"
)

// recorder is a testing.TB that keeps what a tap reports.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (r *recorder) reports() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

const (
	pingReq  = `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"data":"x"}}`
	pingResp = `{"jsonrpc":"2.0","id":1,"result":{"status":"pong","echo":"x","timestamp":"2026-12-06T16:21:28Z","protocol":1,"worker":{"name":"w","version":"1","drivers":["d"]}}}`
	prepReq  = `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[]}}}`
	beat     = `{"jsonrpc":"2.0","method":"heartbeat","params":{"timestamp":"2026-12-06T16:21:28Z"}}`
)

// feed gives the tap a direction's bytes a few at a time, as pipes may.
func feed(write func([]byte), s string) {
	for len(s) > 0 {
		n := min(len(s), 7)
		write([]byte(s[:n]))
		s = s[n:]
	}
}

// TestTapSplitsAndSelects: a tap reassembles lines from small chunks,
// skips blank lines and CRs, passes valid frames, and validates a response
// against its request's method.
func TestTapSplitsAndSelects(t *testing.T) {
	rec := &recorder{TB: t}
	tap := wiretest.NewTap(rec, wiretest.Both)
	feed(tap.HostWrote, pingReq+"\r\n\n"+prepReq+"\n")
	feed(tap.WorkerWrote, beat+"\n  \n"+pingResp+"\r\n")
	if errs := rec.reports(); len(errs) != 0 {
		t.Fatalf("valid frames reported: %v", errs)
	}
	// A pong is not a prepare result.
	feed(tap.WorkerWrote, strings.Replace(pingResp, `"id":1`, `"id":2`, 1)+"\n")
	errs := rec.reports()
	if len(errs) != 1 || !strings.Contains(errs[0], "prepare.response.schema.json") || !strings.Contains(errs[0], `"id":2`) {
		t.Fatalf("a pong answering prepare: reports %q, want one naming prepare.response.schema.json and quoting the frame", errs)
	}
	// An unfinished line is not a frame yet.
	tap.WorkerWrote([]byte(`{"jsonrpc":`))
	if n := len(rec.reports()); n != 1 {
		t.Fatalf("a partial line was validated: %d reports", n)
	}
}

// TestTapChecksOnlyWhatItIsAskedTo: a tap for a fake worker validates the
// host's frames only, one for hand-written host frames the worker's only.
func TestTapChecksOnlyWhatItIsAskedTo(t *testing.T) {
	bad := `{"jsonrpc":"2.0","id":3,"method":"prepare","params":{}}` + "\n"
	badWorker := `{"jsonrpc":"2.0","method":"progress","params":{}}` + "\n"

	rec := &recorder{TB: t}
	tap := wiretest.NewTap(rec, wiretest.HostFrames)
	tap.WorkerWrote([]byte(badWorker))
	tap.HostWrote([]byte(bad))
	if errs := rec.reports(); len(errs) != 1 || !strings.Contains(errs[0], "the host wrote") {
		t.Errorf("HostFrames: reports %q, want the host's frame only", errs)
	}

	rec = &recorder{TB: t}
	tap = wiretest.NewTap(rec, wiretest.WorkerFrames)
	tap.HostWrote([]byte(bad))
	tap.WorkerWrote([]byte(badWorker))
	if errs := rec.reports(); len(errs) != 1 || !strings.Contains(errs[0], "the worker wrote") {
		t.Errorf("WorkerFrames: reports %q, want the worker's frame only", errs)
	}
}

// TestTapCapsReports: a connection that goes wrong reports a few frames
// and says it stopped, rather than one report per frame.
func TestTapCapsReports(t *testing.T) {
	rec := &recorder{TB: t}
	tap := wiretest.NewTap(rec, wiretest.Both)
	for range 100 {
		tap.WorkerWrote([]byte("garbage\n"))
	}
	if errs := rec.reports(); len(errs) < 2 || len(errs) > 20 || !strings.Contains(errs[len(errs)-1], "only the first") {
		t.Errorf("%d reports, want a few and a last one saying the rest are not reported", len(errs))
	}
}

// TestTapWrappers: Serve taps an in-memory worker, Transport a Process on
// the host's side; both see both directions and report through the test.
func TestTapWrappers(t *testing.T) {
	// The worker answers the first line with a pong missing its timestamp.
	serve := func(ctx context.Context, rw io.ReadWriteCloser) error {
		defer rw.Close()
		buf := make([]byte, 4096)
		if _, err := rw.Read(buf); err != nil {
			return err
		}
		resp := strings.Replace(pingResp, `"timestamp":"2026-12-06T16:21:28Z",`, "", 1)
		_, err := io.WriteString(rw, strings.Replace(resp, `"id":1`, `"id":-1`, 1)+"\n")
		return err
	}
	for name, wrap := range map[string]func(testing.TB) transport.Transport{
		"Serve": func(tb testing.TB) transport.Transport {
			return &transport.InMemory{Serve: wiretest.Serve(tb, serve, wiretest.Both)}
		},
		"Transport": func(tb testing.TB) transport.Transport {
			return wiretest.Transport(tb, &transport.InMemory{Serve: serve}, wiretest.Both)
		},
	} {
		t.Run(name, func(t *testing.T) {
			rec := &recorder{TB: t}
			p, err := wrap(rec).Start(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if _, err := io.WriteString(p, strings.Replace(pingReq, `"id":1`, `"id":-1`, 1)+"\n"); err != nil {
				t.Fatal(err)
			}
			io.ReadAll(p)
			<-p.Done()
			errs := rec.reports()
			if len(errs) != 2 || !strings.Contains(errs[0], "the host wrote") || !strings.Contains(errs[1], "ping.response.schema.json") {
				t.Errorf("reports %q, want the host's negative id and the pong without timestamp", errs)
			}
			if _, ok := p.(transport.Killer); !ok {
				t.Errorf("%T lost the Killer of the Process it wraps", p)
			}
		})
	}
}

// infoTransport starts in-memory workers whose Processes also tell
// TransportInfo, as E2B's do.
type infoTransport struct{ transport.InMemory }

type infoProcess struct{ transport.Process }

func (infoProcess) TransportInfo() any { return "info" }

func (t *infoTransport) Start(ctx context.Context) (transport.Process, error) {
	p, err := t.InMemory.Start(ctx)
	if err != nil {
		return nil, err
	}
	return infoProcess{p}, nil
}

// TestTapKeepsOptionalMethods: a tapped Process has the optional methods
// of the one it wraps, and only those: the host records TransportInfo in
// status.json and kills through Killer.
func TestTapKeepsOptionalMethods(t *testing.T) {
	serve := func(ctx context.Context, rw io.ReadWriteCloser) error { return rw.Close() }
	for name, tc := range map[string]struct {
		tr         transport.Transport
		kill, info bool
	}{
		"kill": {&transport.InMemory{Serve: serve}, true, false},
		"info": {&infoTransport{transport.InMemory{Serve: serve}}, false, true},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := wiretest.Transport(t, tc.tr, wiretest.Both).Start(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			_, kill := p.(transport.Killer)
			ti, info := p.(interface{ TransportInfo() any })
			if _, pid := p.(interface{ Pid() int }); kill != tc.kill || info != tc.info || pid {
				t.Errorf("%T: Kill %v, TransportInfo %v, Pid %v; want %v, %v, false", p, kill, info, pid, tc.kill, tc.info)
			}
			if info && ti.TransportInfo() != "info" {
				t.Errorf("TransportInfo() = %v, want the wrapped Process's", ti.TransportInfo())
			}
		})
	}
}
