package e2b_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/e2bfake"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/transport/e2b"
)

// recorder is a Transport that keeps the Process of every start.
type recorder struct {
	transport.Transport
	mu    sync.Mutex
	procs []transport.Process
}

func (r *recorder) Start(ctx context.Context) (transport.Process, error) {
	p, err := r.Transport.Start(ctx)
	if err == nil {
		r.mu.Lock()
		r.procs = append(r.procs, p)
		r.mu.Unlock()
	}
	return p, err
}

func newPool(t testing.TB, srv *e2bfake.Server, size int) *e2b.Pool {
	t.Helper()
	pool, err := e2b.NewPool(context.Background(), newE2B(t, srv, "worker"), size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	return pool
}

// waitFor polls cond; the bound only guards against hangs.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after 30s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPool_SessionsGetWarmFreshSandboxes: with a pool of 2, six sessions
// run by host.RunMany three at a time each get a sandbox of their own,
// warmed before they asked; the pool refills to 2; Close leaves no
// sandbox behind.
func TestPool_SessionsGetWarmFreshSandboxes(t *testing.T) {
	srv := newServer(t, fakeOptions())
	pool := newPool(t, srv, 2)
	if got := len(srv.Sandboxes()); got != 2 || pool.Idle() != 2 {
		t.Fatalf("after NewPool: %d sandboxes, %d idle; want 2", got, pool.Idle())
	}
	uploads := srv.Calls(e2bfake.OpUpload)
	rec := &recorder{Transport: pool}
	base := t.TempDir()
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "nap", Driver: "sleep", Config: map[string]any{"ms": 50}}}}
	jobs := make([]host.Job, 6)
	for i := range jobs {
		jobs[i] = host.Job{Transport: tapped(t, rec), Spec: host.RunSpec{Dir: filepath.Join(base, fmt.Sprint(i)), Manifest: m}}
	}
	sum, err := host.RunMany(t.Context(), jobs, 3)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Succeeded != 6 {
		t.Fatalf("%d of 6 sessions succeeded", sum.Succeeded)
	}
	var ids []string
	for _, p := range rec.procs {
		tm := infoOf(t, p)
		if !tm.Pooled || tm.Create != 0 || tm.Upload != 0 {
			t.Errorf("info %+v, want a pooled sandbox", tm)
		}
		ids = append(ids, tm.SandboxID)
	}
	slices.Sort(ids)
	if len(slices.Compact(slices.Clone(ids))) != 6 {
		t.Errorf("sandboxes %v: some served two sessions", ids)
	}
	if n := srv.Calls(e2bfake.OpUpload); n-uploads != 6 {
		t.Errorf("%d uploads for 6 replacement sandboxes", n-uploads)
	}
	waitFor(t, "refilled to 2", func() bool { return pool.Idle() == 2 })
	live := srv.Sandboxes()
	if len(live) != 2 {
		t.Errorf("live sandboxes %v, want the 2 idle ones: used ones are killed", live)
	}
	for _, id := range live {
		if _, used := slices.BinarySearch(ids, id); used {
			t.Errorf("used sandbox %s is still alive", id)
		}
	}
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
	if live := srv.Sandboxes(); len(live) != 0 {
		t.Errorf("after Close: sandboxes %v", live)
	}
	if _, err := pool.Start(t.Context()); !errors.Is(err, e2b.ErrPoolClosed) {
		t.Errorf("Start after Close = %v, want ErrPoolClosed", err)
	}
}

// TestPool_StartWaitsForAWarmSandbox: with every sandbox in use, Start
// waits for the replacement, whose warm-up is retried after failures;
// when warm-ups keep failing, Start's context bounds the wait and the
// error carries the last failure.
func TestPool_StartWaitsForAWarmSandbox(t *testing.T) {
	srv := newServer(t, fakeOptions())
	pool := newPool(t, srv, 1)
	srv.FailNext(e2bfake.OpCreate, 503, 3) // the first refill fails thrice
	p1, err := pool.Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer p1.Close()
	p2, err := pool.Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if infoOf(t, p1).SandboxID == infoOf(t, p2).SandboxID {
		t.Fatal("two sessions got one sandbox")
	}
	t.Logf("the second session waited %v for its sandbox", infoOf(t, p2).Wait)
	if n := srv.Calls(e2bfake.OpCreate); n < 1+4 {
		t.Errorf("%d creates, want at least 1 + 3 failed + 1", n)
	}

	// Take the replacement once warm, with warm-ups failing from now on:
	// the pool is dry for good.
	waitFor(t, "refilled", func() bool { return pool.Idle() == 1 })
	srv.FailNext(e2bfake.OpCreate, 503, 1<<20)
	p3, err := pool.Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer p3.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	p4, err := pool.Start(ctx)
	if err == nil {
		p4.Close()
	}
	var ae *e2b.APIError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ae) || ae.Status != 503 {
		t.Errorf("Start on a dry pool = %v, want DeadlineExceeded and the last warm-up's 503", err)
	}
}

// TestPool_CloseKillsIdleAndInFlight: Close kills the idle sandboxes and
// those being warmed; a sandbox handed out stays until its session ends.
func TestPool_CloseKillsIdleAndInFlight(t *testing.T) {
	srv := newServer(t, fakeOptions())
	pool := newPool(t, srv, 3)
	p, err := pool.Start(t.Context()) // starts a refill
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
	id := infoOf(t, p).SandboxID
	if live := srv.Sandboxes(); len(live) != 1 || live[0] != id {
		t.Errorf("after Close: sandboxes %v, want only the one in use, %s", live, id)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if live := srv.Sandboxes(); len(live) != 0 {
		t.Errorf("after the session: sandboxes %v", live)
	}
}

// TestPool_FailedWarmUpKillsWhatWasStarted: NewPool fails when a sandbox
// cannot be warmed, and leaves none behind.
func TestPool_FailedWarmUpKillsWhatWasStarted(t *testing.T) {
	srv := newServer(t, fakeOptions())
	srv.FailNext(e2bfake.OpUpload, 500, 100)
	tr := newE2B(t, srv, "worker")
	tr.MaxRetries = -1
	_, err := e2b.NewPool(t.Context(), tr, 3)
	var ae *e2b.APIError
	if !errors.As(err, &ae) || ae.Status != 500 {
		t.Fatalf("NewPool = %v, want the upload's *e2b.APIError", err)
	}
	if live := srv.Sandboxes(); len(live) != 0 {
		t.Errorf("sandboxes left after a failed NewPool: %v", live)
	}
}
