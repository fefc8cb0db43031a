package conform_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
	"github.com/tproxy/tproxy/worker/conform"
)

// workerEnv makes the test binary act as a Go worker with the conformance
// drivers (the re-exec trick of host/main_test.go: no build step).
const workerEnv = "TPROXY_CONFORM_TEST_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" {
		worker.Main(goWorker())
	}
	goleak.VerifyTestMain(wiretest.Main(m)) // a tap reporting after its test ended fails the run
}

func goWorker() *worker.Worker {
	w := worker.New("conform-test-worker", "0.0.0")
	conform.RegisterDrivers(w)
	return w
}

// subprocess runs goWorker in a child process.
func subprocess(t *testing.T) *transport.Subprocess {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Under -race a program sleeps a second when it exits with code 0
	// (atexit_sleep_ms), which would only slow the checks down.
	return &transport.Subprocess{Path: exe, Env: append(os.Environ(), workerEnv+"=1",
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))}
}

// The Go worker runtime passes the whole kit, in-process and as a process.
// testTimeout bounds each check in these tests: they run in parallel,
// each streaming frames of 16 MiB, under the race detector, on machines
// that may be busy. The bound is a liveness check, not a goal.
var testTimeout = conform.Timeout(60 * time.Second)

// The kit writes frames that are wrong on purpose, so only the Go
// worker's are validated against docs/schema.
func TestGoWorkerInMemory(t *testing.T) {
	t.Parallel()
	conform.Test(t, &transport.InMemory{Serve: wiretest.Serve(t, goWorker().Serve, wiretest.WorkerFrames)}, testTimeout)
}

func TestGoWorkerSubprocess(t *testing.T) {
	t.Parallel()
	conform.Test(t, wiretest.Transport(t, subprocess(t), wiretest.WorkerFrames), testTimeout)
}

// python returns the Python test worker's transport, or skips.
func python(t *testing.T, args ...string) transport.Transport {
	t.Helper()
	py := pythonExe(t)
	script, err := filepath.Abs(filepath.Join("testdata", "broken_worker.py"))
	if err != nil {
		t.Fatal(err)
	}
	// -I -S: no user site, no site module; the worker needs the standard
	// library only, and starts in a fraction of the time.
	return transport.Command(py, append([]string{"-I", "-S", script}, args...)...)
}

var pythonOnce = sync.OnceValues(func() (string, error) {
	if _, err := exec.LookPath("python3"); err != nil {
		return "", err
	}
	// The interpreter itself rather than what PATH finds: a version
	// manager's shim (pyenv) can cost more to start than the worker.
	out, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
	return strings.TrimSpace(string(out)), err
})

func pythonExe(t *testing.T) string {
	py, err := pythonOnce()
	if err != nil || py == "" {
		t.Skipf("python3 is not on PATH (%v); the Python workers' tests need it (CI has it)", err)
	}
	return py
}

// The Python worker of testdata with its faults switched off is a second,
// independent implementation of the protocol: it passes everything.
func TestPythonWorker(t *testing.T) {
	t.Parallel()
	conform.Test(t, python(t, "--faults=none"), testTimeout)
}

// The broken worker's faults fail exactly the checks that look for them.
func TestBrokenWorker(t *testing.T) {
	t.Parallel()
	rep := conform.Run(t.Context(), python(t))
	want := []string{
		"version_mismatch", // it answers ping with the host's protocol
		"step_success",     // it sends step_complete after the response,
		"event_order",      // which both check
		"inputs",           // conform_input's timestamp is an epoch number
		"parse_error",      // it exits on a line that is not JSON
		"heartbeats",       // it never beats
		"artifacts",        // it serves fetch_artifact of "../x"
		"stray_stdout",     // print() reaches the protocol channel
	}
	if got := rep.Failed(); !slices.Equal(got, want) {
		for _, r := range rep.Results {
			t.Log(r)
		}
		t.Errorf("failed checks:\n got %q\nwant %q", got, want)
	}
	if len(rep.Results) != len(conform.Checks()) {
		t.Errorf("%d results for %d checks", len(rep.Results), len(conform.Checks()))
	}
}

func TestChecks(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range conform.Checks() {
		if c.Name == "" || c.Section == "" || c.Doc == "" || strings.ContainsAny(c.Name, " \t") {
			t.Errorf("check %+v: needs a one-word name, a section and a doc line", c)
		}
		if !strings.HasPrefix(c.Section, "§") {
			t.Errorf("check %s: section %q does not start with §", c.Name, c.Section)
		}
		if seen[c.Name] {
			t.Errorf("check %s listed twice", c.Name)
		}
		seen[c.Name] = true
	}
}

// A worker that never answers fails the check it is in within the
// timeout, saying what the kit waited for, and is closed.
func TestTimeout(t *testing.T) {
	silent := &transport.InMemory{Serve: func(ctx context.Context, rw io.ReadWriteCloser) error {
		defer rw.Close()
		io.Copy(io.Discard, rw)
		return nil
	}}
	start := time.Now()
	var progress []string
	rep := conform.Run(t.Context(), silent, conform.Timeout(200*time.Millisecond),
		conform.Select(func(name string) bool { return name == "handshake" || name == "cleanup" }),
		conform.Progress(func(r conform.Result) { progress = append(progress, r.Check) }))
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("two checks of a silent worker took %v with a 200ms timeout", d)
	}
	if got, want := rep.Failed(), []string{"handshake", "cleanup"}; !slices.Equal(got, want) {
		t.Fatalf("failed %q; want %q", got, want)
	}
	if !slices.Equal(progress, []string{"handshake", "cleanup"}) {
		t.Errorf("progress reported %q", progress)
	}
	for _, r := range rep.Results {
		if !strings.Contains(r.Detail, "no response to ping (id 1) within 200ms") {
			t.Errorf("%s: detail %q", r.Check, r.Detail)
		}
		if !strings.HasPrefix(r.String(), "FAIL  "+r.Check+"  §5.1: ") {
			t.Errorf("line %q", r)
		}
	}
	if got, want := rep.Summary(), "2 checks: 0 passed, 2 failed"; got != want {
		t.Errorf("summary %q; want %q", got, want)
	}
}

// When ctx ends, the check running fails and the rest are skipped.
func TestCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	rep := conform.Run(ctx, &transport.InMemory{Serve: wiretest.Serve(t, goWorker().Serve, wiretest.WorkerFrames)})
	if len(rep.Failed()) != 0 || rep.OK() {
		t.Errorf("failed %q, OK %v; want none failed, not OK", rep.Failed(), rep.OK())
	}
	n := len(conform.Checks())
	if got, want := rep.Summary(), fmt.Sprintf("%d checks: 0 passed, 0 failed, %d skipped", n, n); got != want {
		t.Errorf("summary %q; want %q", got, want)
	}
}
