package host_test

import (
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/transport"
)

// resources counts what a leak would grow: open descriptors, goroutines and
// child processes of this process.
type resources struct{ fds, goroutines, children int }

func count(t *testing.T) resources {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting descriptors: %v", err)
	}
	files, _ := filepath.Glob("/proc/self/task/*/children")
	children := 0
	for _, f := range files {
		b, _ := os.ReadFile(f)
		children += len(strings.Fields(string(b)))
	}
	return resources{fds: len(fds), goroutines: runtime.NumGoroutine(), children: children}
}

// exceeds reports whether any count of r is above b's.
func (r resources) exceeds(b resources) bool {
	return r.fds > b.fds || r.goroutines > b.goroutines || r.children > b.children
}

// settled waits for goroutines that are ending to end, then counts.
func settled(t *testing.T, want resources) resources {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := count(t)
		if got.fds <= want.fds && got.goroutines <= want.goroutines && got.children <= want.children || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// plainWorker builds the conformance worker without the race detector:
// what TestMatrixNoLeaks counts is the host's, and a race-built worker
// spends about 100 ms of its start mapping the detector's shadow memory,
// which over 1,100 sessions would be most of the host tests' time.
func plainWorker(t *testing.T) transport.Transport {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "conformworker")
	cmd := osexec.CommandContext(t.Context(), "go", "build", "-o", bin, "github.com/tproxy/tproxy/worker/conform/conformworker")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return wiretest.Transport(nil, &transport.Subprocess{Path: bin}, wiretest.Both)
}

func oneSession(t *testing.T, tr transport.Transport, dir string) error {
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{
		{ID: "a", Driver: "conform.emit", Config: map[string]any{"events": 10}},
		{ID: "b", Driver: "conform.artifacts", Needs: []string{"a"}, Config: map[string]any{"files": map[string]any{"out.txt": "x"}}},
	}}
	st, err := host.RunManifest(t.Context(), tr, host.RunSpec{Dir: dir, Manifest: m, Options: quiet()})
	if err == nil && st.Outcome != host.OutcomeSuccess {
		err = fmt.Errorf("outcome %s", st.Outcome)
	}
	return err
}

// TestMatrixNoLeaks runs 1,000 sequential and 100 concurrent sessions over
// worker subprocesses and compares descriptors, goroutines and child
// processes before and after.
func TestMatrixNoLeaks(t *testing.T) {
	sequential, concurrent := 1000, 100
	if testing.Short() {
		sequential, concurrent = 50, 20
	}
	base := t.TempDir()
	tr := plainWorker(t)
	before := count(t)
	start := time.Now()
	for i := range sequential {
		if err := oneSession(t, tr, filepath.Join(base, fmt.Sprintf("seq-%d", i))); err != nil {
			t.Fatalf("sequential session %d: %v", i, err)
		}
	}
	t.Logf("%d sequential sessions in %v", sequential, time.Since(start))
	if after := settled(t, before); after.exceeds(before) {
		t.Errorf("after %d sequential sessions: %+v, before: %+v", sequential, after, before)
	}

	start = time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, concurrent)
	for i := range concurrent {
		wg.Go(func() {
			if err := oneSession(t, tr, filepath.Join(base, fmt.Sprintf("par-%d", i))); err != nil {
				errs <- fmt.Errorf("concurrent session %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d concurrent sessions in %v", concurrent, time.Since(start))
	if after := settled(t, before); after.exceeds(before) {
		t.Errorf("after %d concurrent sessions: %+v, before: %+v", concurrent, after, before)
	}
	for _, d := range []string{"seq-0", fmt.Sprintf("par-%d", concurrent-1)} {
		if _, err := os.Stat(filepath.Join(base, d, host.StatusFile)); err != nil {
			t.Errorf("session %s: %v", d, err)
		}
	}
}
