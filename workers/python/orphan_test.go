//go:build linux

package pythonworker_test

// Tests of how a Python worker process ends, behind the real Go host: the
// same as the Go runtime's (worker/exit_test.go). The test binary is
// re-executed as a host that drives testdata/orphan_worker.py, so that the
// host itself can be killed.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/proctest"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// The host role: pyHostEnv names python3 and makes the test binary play
// the host instead of running the tests; the others are its settings.
const (
	pyHostEnv      = "TPROXY_PY_ORPHAN_HOST"
	pyWorkDirEnv   = "TPROXY_PY_ORPHAN_WORKDIR"
	pyLeaveEnv     = "TPROXY_PY_ORPHAN_LEAVE"
	orphanWorkerPy = "testdata/orphan_worker.py"
)

// init plays the host role, before the tests would run (it needs no flag).
func init() {
	if py := os.Getenv(pyHostEnv); py != "" {
		os.Exit(pyHostRole(py))
	}
}

// orphanTransport is orphan_worker.py under python3 (a skip without it),
// its session directories in workDir.
func orphanTransport(t *testing.T, workDir string) (py string, tr *transport.Subprocess) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not on PATH")
	}
	script, err := filepath.Abs(orphanWorkerPy)
	if err != nil {
		t.Fatal(err)
	}
	return py, workerSubprocess(py, script, workDir)
}

func workerSubprocess(py, script, workDir string) *transport.Subprocess {
	return &transport.Subprocess{Path: py, Args: []string{script},
		Env: []string{"TPROXY_WORK_DIR=" + workDir, "PYTHONDONTWRITEBYTECODE=1"}}
}

// pyHostRole starts the worker, prepares a session, runs "spawn" (with a
// grandchild, and leaving its child behind if pyLeaveEnv is set) and
// prints "dir <session dir>" and "pids <worker> <child> <grandchild>" on
// stdout, then waits to be killed.
func pyHostRole(py string) int {
	ctx := context.Background()
	script, _ := filepath.Abs(orphanWorkerPy)
	tr := workerSubprocess(py, script, os.Getenv(pyWorkDirEnv))
	tr.Stderr = os.Stderr
	spawned := make(chan tproxy.Event, 1)
	c, err := host.Start(ctx, tr, host.WithSink(orphanSink(func(e tproxy.Event) {
		if e.Name == "spawned" {
			spawned <- e
		}
	})))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	res, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: "orphan",
		Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "s", Driver: "spawn"}}}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("dir", res.SessionDir)
	cfg := map[string]any{"leave": os.Getenv(pyLeaveEnv) != "", "grandchild": true}
	go c.ExecStep(ctx, tproxy.ExecStepParams{StepID: "s", Driver: "spawn", Config: cfg})
	e := <-spawned
	pid := func(k string) int { f, _ := e.Data[k].(float64); return int(f) }
	fmt.Println("pids", pid("worker"), pid("child"), pid("grandchild"))
	select {} // until killed
}

// orphanSink is a sink that calls f with each event.
type orphanSink func(tproxy.Event)

func (f orphanSink) Event(_ context.Context, e tproxy.Event) error { f(e); return nil }
func (f orphanSink) Metric(context.Context, tproxy.Metric) error   { return nil }
func (f orphanSink) Log(context.Context, tproxy.LogRecord) error   { return nil }
func (f orphanSink) Flush() error                                  { return nil }

// TestPythonHostKilledMidStepLeavesNoOrphan: a host SIGKILLed while a
// Python worker's step runs a child process, and a grandchild its shell
// left behind in the worker's process group. The worker (SIGTERM from the
// parent-death signal transport.Subprocess set, and its stdin's end)
// cancels the step, removes its session directory, kills what its driver
// left running and exits. The test waits (a hang guard of 10 s, polling
// /proc) and logs how long it took; the acceptance bound is 1 s.
func TestPythonHostKilledMidStepLeavesNoOrphan(t *testing.T) {
	for _, leave := range []bool{false, true} {
		name := "child bound to the step"
		if leave {
			name = "child left behind by the driver"
		}
		t.Run(name, func(t *testing.T) { pyHostKilledMidStep(t, leave) })
	}
}

func pyHostKilledMidStep(t *testing.T, leave bool) {
	workDir := t.TempDir()
	py, _ := orphanTransport(t, workDir)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := exec.Command(exe)
	h.Env = append(os.Environ(), pyHostEnv+"="+py, pyWorkDirEnv+"="+workDir)
	if leave {
		h.Env = append(h.Env, pyLeaveEnv+"=1")
	}
	h.Stderr = os.Stderr
	out, err := h.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	defer h.Wait()
	defer h.Process.Kill()
	r := bufio.NewReader(out)
	var sessionDir string
	var pids []int
	for pids == nil {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("the host role ended before the step started: %v", err)
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "dir":
			sessionDir = f[1]
		case len(f) == 4 && f[0] == "pids":
			for _, s := range f[1:] {
				n, _ := strconv.Atoi(s)
				pids = append(pids, n)
			}
		}
	}
	names := []string{"worker", "child", "grandchild"}
	t.Cleanup(func() { // should the test fail, leave nothing running
		for _, p := range pids {
			if p > 0 {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
	})
	for i, p := range pids {
		if p <= 0 || proctest.Exited(p) {
			t.Fatalf("the %s (pid %d) is not running before the host is killed", names[i], p)
		}
	}
	if _, err := os.Stat(sessionDir); err != nil {
		t.Fatalf("the session directory: %v", err)
	}

	killed := time.Now()
	if err := h.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	allDead := func() bool {
		for _, p := range pids {
			if !proctest.Exited(p) {
				return false
			}
		}
		return true
	}
	for !allDead() {
		if time.Since(killed) > 10*time.Second { // a hang guard
			var alive []string
			for i, p := range pids {
				if !proctest.Exited(p) {
					alive = append(alive, fmt.Sprintf("%s %d", names[i], p))
				}
			}
			t.Fatalf("10 s after the host's SIGKILL, still running: %s", strings.Join(alive, ", "))
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the worker, its child and its grandchild were gone %v after the host's SIGKILL (acceptance: 1 s)", time.Since(killed))
	if _, err := os.Stat(sessionDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the session directory %s is left behind (%v)", sessionDir, err)
	}
	if left, _ := filepath.Glob(filepath.Join(workDir, "tproxy-*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// namedEvent is a sink that keeps events and closes ch at the first named
// name.
type namedEvent struct {
	logsink.Memory
	name string
	once sync.Once
	ch   chan struct{}
}

func (s *namedEvent) Event(ctx context.Context, e tproxy.Event) error {
	err := s.Memory.Event(ctx, e)
	if e.Name == s.name {
		s.once.Do(func() { close(s.ch) })
	}
	return err
}

// TestPythonSIGTERMMidStepAnswersCancelled: SIGTERM to a Python worker
// process in the middle of a step, a few times. Every time the host gets
// step_failed (error_type cancelled) and the -32800 answer naming SIGTERM,
// the worker exits 0, and its session directory is gone.
func TestPythonSIGTERMMidStepAnswersCancelled(t *testing.T) {
	const runs = 5
	workDir := t.TempDir()
	_, tr := orphanTransport(t, workDir)
	stderr := &lockedBuffer{}
	tr.Stderr = stderr
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker stderr:\n%s", stderr.String())
		}
	})
	for i := range runs {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			sink := &namedEvent{name: "blocked", ch: make(chan struct{})}
			c, err := host.Start(t.Context(), tr, host.WithSink(sink))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			res, err := c.Prepare(t.Context(), tproxy.PrepareParams{SessionID: "term",
				Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "b", Driver: "block"}}}})
			if err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() {
				_, err := c.ExecStep(t.Context(), tproxy.ExecStepParams{StepID: "b", Driver: "block"})
				errc <- err
			}()
			select {
			case <-sink.ch:
			case <-time.After(10 * time.Second): // a hang guard
				t.Fatal("the step did not start within 10 s")
			}
			if err := syscall.Kill(c.Process().(interface{ Pid() int }).Pid(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			var callErr error
			select {
			case callErr = <-errc:
			case <-time.After(10 * time.Second): // a hang guard
				t.Fatal("ExecStep still waiting 10 s after SIGTERM")
			}
			var re *host.RemoteError
			if !errors.As(callErr, &re) || re.Code != tproxy.CodeRequestCancelled {
				t.Errorf("ExecStep = %v, want a *host.RemoteError with code %d", callErr, tproxy.CodeRequestCancelled)
			} else if !strings.Contains(re.Message, "SIGTERM") {
				t.Errorf("the answer %q does not say SIGTERM", re.Message)
			}
			var failed *tproxy.Event
			for _, e := range sink.Events() {
				if e.Name == "step_failed" {
					failed = &e
				}
			}
			if failed == nil || failed.Data["error_type"] != "cancelled" {
				t.Errorf("step_failed = %+v, want error_type cancelled", failed)
			}
			select {
			case <-c.Process().Done():
			case <-time.After(10 * time.Second): // a hang guard
				t.Fatal("the worker did not exit after SIGTERM")
			}
			if st := c.Process().Exit(); !st.Success() {
				t.Errorf("exit %v, want 0", st)
			}
			if _, err := os.Stat(res.SessionDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the session directory %s is left behind (%v)", res.SessionDir, err)
			}
			if left, _ := filepath.Glob(filepath.Join(workDir, "tproxy-*")); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}
