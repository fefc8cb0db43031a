package host_test

// Regression tests for the runner's part of issue 13 (hostile and broken
// peers): deadlines Collect keeps, caps a worker cannot get past, a
// session directory claimed once, typed artifact errors, Run's phases in
// order, and returned errors without secrets.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// handWorker is a worker written by hand, for what a real worker never
// does. It answers ping (driver "d"), prepare (echoing the session id) and
// cleanup itself, and every other request with answer(method, params): the
// response's "result":… or "error":… member, or "" for no answer at all;
// before, if set, gives raw lines to write before that answer. It counts
// the requests by method.
type handWorker struct {
	answer func(method string, params json.RawMessage) string
	before func(method string) string

	mu    sync.Mutex
	calls map[string]int
}

func (h *handWorker) count(method string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[method]
}

func (h *handWorker) transport() *transport.InMemory {
	// The fake's frames are wrong on purpose; the host's are validated.
	return &transport.InMemory{CloseTimeout: 50 * time.Millisecond, TermTimeout: 50 * time.Millisecond,
		Serve: wiretest.Serve(nil, func(ctx context.Context, rw io.ReadWriteCloser) error {
			defer rw.Close()
			sc := bufio.NewScanner(rw)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var req struct {
					ID     json.RawMessage `json:"id"`
					Method string          `json:"method"`
					Params json.RawMessage `json:"params"`
				}
				json.Unmarshal(sc.Bytes(), &req)
				if req.ID == nil {
					continue
				}
				h.mu.Lock()
				if h.calls == nil {
					h.calls = map[string]int{}
				}
				h.calls[req.Method]++
				h.mu.Unlock()
				var frag string
				switch req.Method {
				case "ping":
					frag = `"result":{"status":"pong","echo":"handshake","timestamp":"2025-01-01T00:00:00Z","protocol":1,"worker":{"name":"hand","version":"1","drivers":["d"]}}`
				case "prepare":
					var p struct {
						SessionID string `json:"session_id"`
					}
					json.Unmarshal(req.Params, &p)
					frag = `"result":{"status":"ready","session_id":"` + p.SessionID + `"}`
				case "cleanup":
					frag = `"result":{"status":"cleaned","session_id":"s1","steps_executed":1}`
				default:
					if h.before != nil {
						if _, err := io.WriteString(rw, h.before(req.Method)); err != nil {
							return nil
						}
					}
					frag = h.answer(req.Method, req.Params)
				}
				if frag == "" {
					continue
				}
				if _, err := io.WriteString(rw, `{"jsonrpc":"2.0","id":`+string(req.ID)+`,`+frag+"}\n"); err != nil {
					return nil
				}
			}
			return nil
		}, wiretest.HostFrames)}
}

// listing is an exec_step result listing arts.
func listing(arts ...tproxy.Artifact) string {
	b, _ := json.Marshal(tproxy.ExecStepResult{Status: "complete", StepID: "s", Artifacts: arts})
	return `"result":` + string(b)
}

// chunk is a fetch_artifact result.
func chunk(data string, eof bool) string {
	b, _ := json.Marshal(tproxy.FetchArtifactResult{Data: []byte(data), EOF: eof})
	return `"result":` + string(b)
}

func oneStep() tproxy.Manifest {
	return tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "s", Driver: "d"}}}
}

// stuckWorker is a worker process that answers the handshake and prepare,
// then reads nothing more, answers nothing, and exits neither on stdin EOF
// nor on SIGTERM: only SIGKILL ends it, like a driver stuck in a system
// call that ignores its cancellation.
func stuckWorker() *transport.Subprocess {
	const script = `trap '' TERM
id() { sed -n 's/.*"id":\([0-9][0-9]*\).*/\1/p'; }
read -r l; i=$(printf '%s' "$l" | id)
printf '{"jsonrpc":"2.0","id":%s,"result":{"status":"pong","echo":"handshake","timestamp":"2025-01-01T00:00:00Z","protocol":1,"worker":{"name":"stuck","version":"1","drivers":["d"]}}}\n' "$i"
read -r l; i=$(printf '%s' "$l" | id)
printf '{"jsonrpc":"2.0","id":%s,"result":{"status":"ready","session_id":"s1"}}\n' "$i"
exec sleep 600`
	return transport.Command("sh", "-c", script)
}

// TestCollectBoundedByCallerDeadline: with a worker stuck in a step that
// ignores its cancellation, RunManifest returns about CollectGrace after
// the caller's deadline (the context's, RunSpec.Timeout, or a
// cancellation), having killed the worker and written status.json. It
// used to wait 30 s for cleanup, then the shutdown ladder: 33-38 s.
func TestCollectBoundedByCallerDeadline(t *testing.T) {
	const (
		deadline = time.Second
		grace    = 300 * time.Millisecond
	)
	tests := []struct {
		name         string
		ctxDeadline  time.Duration
		timeout      time.Duration
		cancelOnStep bool // cancel the context as the step is called
		wantKind     string
	}{
		{"context deadline", deadline, 0, false, host.FailureTimeout},
		{"session timeout", 0, deadline, false, host.FailureTimeout},
		{"cancelled", 0, 0, true, host.FailureCancelled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tt.ctxDeadline > 0 {
				ctx, cancel = context.WithTimeout(ctx, tt.ctxDeadline)
				defer cancel()
			}
			opts := quiet()
			if tt.cancelOnStep {
				opts = append(opts, host.WithTrace(func(method string, _ any) func(any, error) {
					if method == tproxy.MethodExecStep {
						cancel()
					}
					return nil
				}))
			}
			start := time.Now()
			// The stuck worker's frames are the document's; the host's are
			// validated.
			st, err := run(t, ctx, wiretest.Transport(t, stuckWorker(), wiretest.HostFrames), host.RunSpec{SessionID: "s1", Manifest: oneStep(),
				Timeout: tt.timeout, CollectGrace: grace, Options: opts})
			took := time.Since(start)
			if err == nil || st.Failure == nil || st.Failure.Kind != tt.wantKind {
				t.Fatalf("err = %v, failure %+v; want kind %s", err, st.Failure, tt.wantKind)
			}
			if st.Exit == nil || st.Exit.Signal != syscall.SIGKILL {
				t.Errorf("exit %+v: the stuck worker should have been killed once the grace was spent", st.Exit)
			}
			// A hang guard, not a timing assertion: the bound is the
			// deadline + the grace + a kill; the old code took 33-38 s.
			if took > 20*time.Second {
				t.Errorf("RunManifest took %v", took)
			}
			t.Logf("returned %v after the start (grace %v)", took.Round(time.Millisecond), grace)
		})
	}
}

// TestArtifactCapsCountCleanedConfig: cleaned_config.json no longer skips
// the caps. Listed at 1 TiB it is skipped without a byte fetched (it made
// the host write 1.3 GB under 1 MiB / 2 MiB caps); small ones count
// against the session's bytes and files.
func TestArtifactCapsCountCleanedConfig(t *testing.T) {
	const (
		sha      = "0000000000000000000000000000000000000000000000000000000000000000"
		sha12345 = "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"
	)
	tests := []struct {
		name        string
		arts        []tproxy.Artifact
		policy      host.ArtifactPolicy
		wantFetched int
		wantSkipped int
	}{
		{"listed at 1 TiB", []tproxy.Artifact{{Path: "cleaned_config.json", Size: 1 << 40, SHA256: sha}},
			host.ArtifactPolicy{MaxFileBytes: 1 << 20, MaxTotalBytes: 2 << 20}, 0, 1},
		{"over its own cap of 1 MiB, under MaxFileBytes", []tproxy.Artifact{{Path: "cleaned_config.json", Size: 2 << 20, SHA256: sha}},
			host.ArtifactPolicy{}, 0, 1},
		{"past the session's bytes", []tproxy.Artifact{{Path: "a.txt", Size: 5, SHA256: sha12345}, {Path: "cleaned_config.json", Size: 5, SHA256: sha12345}},
			host.ArtifactPolicy{MaxTotalBytes: 7}, 1, 1},
		{"past the session's files", []tproxy.Artifact{{Path: "a.txt", Size: 5, SHA256: sha12345}, {Path: "cleaned_config.json", Size: 5, SHA256: sha12345}},
			host.ArtifactPolicy{MaxFiles: 1}, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &handWorker{answer: func(method string, _ json.RawMessage) string {
				if method == "exec_step" {
					return listing(tt.arts...)
				}
				return chunk("12345", true)
			}}
			st, err := run(t, t.Context(), w.transport(), host.RunSpec{SessionID: "s1", Manifest: oneStep(), Artifacts: tt.policy})
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if st.Artifacts.Files != tt.wantFetched || st.Artifacts.Skipped != tt.wantSkipped {
				t.Errorf("artifacts %+v, want %d fetched and %d skipped", st.Artifacts, tt.wantFetched, tt.wantSkipped)
			}
			if got := w.count("fetch_artifact"); got != tt.wantFetched {
				t.Errorf("%d fetch_artifact calls, want %d", got, tt.wantFetched)
			}
		})
	}
}

// TestArtifactMaxFiles: the session's count cap. A worker listing 500
// files gets MaxFiles of them fetched and one artifact_skipped event for
// the rest; the Go worker, told the caps in prepare, lists no more than
// that per step and says how many it left out.
func TestArtifactMaxFiles(t *testing.T) {
	t.Run("host", func(t *testing.T) {
		var arts []tproxy.Artifact
		for i := range 500 {
			arts = append(arts, tproxy.Artifact{Path: fmt.Sprintf("f%03d", i), Size: 1,
				SHA256: "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"}) // "1"
		}
		w := &handWorker{answer: func(method string, _ json.RawMessage) string {
			if method == "exec_step" {
				return listing(arts...)
			}
			return chunk("1", true)
		}}
		dir := filepath.Join(t.TempDir(), "s")
		st, err := run(t, t.Context(), w.transport(), host.RunSpec{Dir: dir, SessionID: "s1", Manifest: oneStep(),
			Artifacts: host.ArtifactPolicy{MaxFiles: 10}})
		if err != nil {
			t.Fatal(err)
		}
		if st.Artifacts.Files != 10 || st.Artifacts.Skipped != 490 || w.count("fetch_artifact") != 10 {
			t.Errorf("artifacts %+v after %d fetches, want 10 fetched, 490 skipped", st.Artifacts, w.count("fetch_artifact"))
		}
		var skipped []map[string]any
		for _, l := range readJSONL(t, filepath.Join(dir, logsink.EventsFile)) {
			if l["event"] == "artifact_skipped" {
				skipped = append(skipped, l)
			}
		}
		if len(skipped) != 1 || str(skipped[0]["count"]) != "490" || !strings.Contains(str(skipped[0]["reason"]), "cap of 10 artifacts") {
			t.Errorf("artifact_skipped events: %v", skipped)
		}
	})
	t.Run("worker", func(t *testing.T) {
		files := map[string]any{}
		for i := range 20 {
			files[fmt.Sprintf("f%02d.txt", i)] = "x"
		}
		dir := filepath.Join(t.TempDir(), "s")
		m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "s", Driver: "files", Config: map[string]any{"files": files}}}}
		st, err := run(t, t.Context(), subprocess(nil), host.RunSpec{Dir: dir, Manifest: m, Artifacts: host.ArtifactPolicy{MaxFiles: 5}})
		if err != nil {
			t.Fatal(err)
		}
		if st.Artifacts.Files != 5 || st.Artifacts.Skipped != 0 || st.Artifacts.Refused != 16 {
			t.Errorf("artifacts %+v: the worker should have listed 5 and left 16 out", st.Artifacts)
		}
		if _, err := os.Stat(filepath.Join(dir, host.ArtifactsDir, "s", "cleaned_config.json")); err != nil {
			t.Errorf("cleaned_config.json is not among the files listed: %v", err)
		}
		var refused []string
		for _, l := range readJSONL(t, filepath.Join(dir, logsink.EventsFile)) {
			if l["event"] == "artifact_refused" {
				refused = append(refused, str(l["reason"]))
				if l["count"] != 16.0 {
					t.Errorf("artifact_refused's count: %v, want 16", l["count"])
				}
			}
		}
		if len(refused) != 1 || !strings.Contains(refused[0], "16 more files were left out") {
			t.Errorf("artifact_refused events: %q", refused)
		}
	})
}

// TestLogCap: a worker streaming events fills RunSpec.MaxLogBytes, not
// the disk: the step is cut short, the run fails with a *host.LimitError
// (kind "limit"), the logs stay under the cap and status.json is written.
// There was no cap: a worker filled the file system.
func TestLogCap(t *testing.T) {
	const capBytes = 64 << 10
	var flood strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&flood, `{"jsonrpc":"2.0","method":"event","params":{"name":"tick","timestamp":"2025-01-01T00:00:00Z","step_id":"s","data":{"i":%d}}}`+"\n", i)
	}
	tests := []struct {
		name string
		tr   transport.Transport
		m    tproxy.Manifest
	}{
		// The cap cancels the step: Execute returns though exec_step is
		// never answered.
		{"a worker that never answers", (&handWorker{
			before: func(string) string { return flood.String() },
			answer: func(string, json.RawMessage) string { return "" },
		}).transport(), oneStep()},
		{"the Go worker", subprocess(nil), tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "s", Driver: "emit", Config: map[string]any{"events": 20000}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "s")
			st, err := run(t, t.Context(), tt.tr, host.RunSpec{Dir: dir, SessionID: "s1", Manifest: tt.m, MaxLogBytes: capBytes})
			var le *host.LimitError
			if !errors.As(err, &le) || le.Max != capBytes || !errors.Is(err, logsink.ErrMaxBytes) {
				t.Fatalf("err = %v, want a *host.LimitError wrapping logsink.ErrMaxBytes", err)
			}
			if st.Failure.Kind != host.FailureLimit || st.Failure.StepID != "s" || st.Steps[0].Status != host.StepCancelled {
				t.Errorf("failure %+v, step %+v", st.Failure, st.Steps[0])
			}
			var size int64
			for _, f := range []string{logsink.EventsFile, logsink.MetricsFile} {
				fi, err := os.Stat(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				size += fi.Size()
			}
			if size > capBytes || size < capBytes/2 {
				t.Errorf("the logs hold %d bytes, cap %d", size, capBytes)
			}
		})
	}
}

// TestStatusSurvivesFullDisk: with the disk full (the session's logs fail
// with ENOSPC, and no file may grow), status.json is still written, over
// the space Prepare set aside, and no status.json.tmp is left. It used to
// be lost, with a 0-byte status.json.tmp left behind.
func TestStatusSurvivesFullDisk(t *testing.T) {
	var disk host.FullDisk
	defer host.SimulateFullDisk(&disk)()
	defer host.LogsOnFullDevice()()
	dir := filepath.Join(t.TempDir(), "s")
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "e", Driver: "emit", Config: map[string]any{"events": 5000}}}}
	r := host.NewRun(inMemory(), host.RunSpec{Dir: dir, Manifest: m, Options: quiet()})
	if err := r.Prepare(t.Context()); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Prepare: %v, want the logs' ENOSPC", err)
	}
	var first host.Status
	if b, err := os.ReadFile(filepath.Join(dir, host.StatusFile)); err != nil || json.Unmarshal(b, &first) != nil || first.Outcome != host.OutcomeRunning {
		t.Errorf("status.json after Prepare: %v, outcome %q", err, first.Outcome)
	}
	disk.Full.Store(true)
	st, err := r.Collect(t.Context())
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want one wrapping ENOSPC", err)
	}
	var onDisk host.Status
	b, rerr := os.ReadFile(filepath.Join(dir, host.StatusFile))
	if rerr != nil || json.Unmarshal(b, &onDisk) != nil || onDisk.Failure == nil || onDisk.Failure.Kind != host.FailureSink || onDisk.Outcome != st.Outcome {
		t.Errorf("status.json on the full disk: %v: %s", rerr, b)
	}
	if _, err := os.Stat(filepath.Join(dir, host.StatusFile+".tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("status.json.tmp left behind: %v", err)
	}

	t.Run("without the reserve", func(t *testing.T) {
		// No space at all: status.json cannot be written, the error says
		// so, and no temporary file is left.
		disk.Full.Store(false)
		dir := filepath.Join(t.TempDir(), "s")
		r := host.NewRun(inMemory(), host.RunSpec{Dir: dir, Manifest: m, Options: quiet()})
		r.Prepare(t.Context())
		os.Remove(filepath.Join(dir, host.StatusFile+".tmp"))
		disk.Full.Store(true)
		_, err := r.Collect(t.Context())
		if err == nil || !strings.Contains(err.Error(), "writing status.json") || !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("err = %v, want the failure to write status.json", err)
		}
		if _, err := os.Stat(filepath.Join(dir, host.StatusFile+".tmp")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("status.json.tmp left behind: %v", err)
		}
	})
}

// TestSessionDirClaimedOnce: runs racing for one session directory, new
// or existing and empty: exactly one gets it, the others fail with
// host.ErrSessionDirUsed and write nothing there. Two used to succeed in
// 2-8% of trials, mixing their events in one events.jsonl.
func TestSessionDirClaimedOnce(t *testing.T) {
	const racers = 16
	for _, exists := range []bool{false, true} {
		t.Run(fmt.Sprintf("exists=%v", exists), func(t *testing.T) {
			for trial := range 20 {
				dir := filepath.Join(t.TempDir(), "s")
				if exists {
					os.Mkdir(dir, 0o755)
				}
				runs := make([]*host.Run, racers)
				errs := make([]error, racers)
				for i := range runs {
					runs[i] = host.NewRun(inMemory(), host.RunSpec{Dir: dir, SessionID: fmt.Sprintf("racer-%d", i),
						Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "a", Driver: "emit"}}}, Options: quiet()})
				}
				var wg sync.WaitGroup
				gate := make(chan struct{})
				for i, r := range runs {
					wg.Go(func() {
						<-gate
						errs[i] = r.Prepare(t.Context())
					})
				}
				close(gate)
				wg.Wait()
				winner := -1
				for i, err := range errs {
					switch {
					case err == nil && winner >= 0:
						t.Fatalf("trial %d: racers %d and %d both got %s", trial, winner, i, dir)
					case err == nil:
						winner = i
					case !errors.Is(err, host.ErrSessionDirUsed):
						t.Errorf("trial %d: racer %d: %v, want host.ErrSessionDirUsed", trial, i, err)
					}
				}
				if winner < 0 {
					t.Fatalf("trial %d: nobody got %s: %v", trial, dir, errs)
				}
				for _, r := range runs {
					r.Collect(t.Context())
				}
				st := readStatus(t, dir)
				if st.SessionID != fmt.Sprintf("racer-%d", winner) || st.Outcome != host.OutcomeSuccess {
					t.Errorf("trial %d: status.json of %s, outcome %s; the winner was racer %d", trial, st.SessionID, st.Outcome, winner)
				}
				for _, l := range readJSONL(t, filepath.Join(dir, logsink.EventsFile)) {
					if l["session"] != st.SessionID {
						t.Fatalf("trial %d: events.jsonl holds a line of session %v", trial, l["session"])
					}
				}
			}
		})
	}
}

// TestArtifactErrorsTyped: a negative size is refused before any fetch
// with a message that says so (it read "sent more than the -5 bytes it
// listed"), and a disk that fails while an artifact is written is an
// *host.ArtifactError wrapping the cause (it was untyped, kind "error").
func TestArtifactErrorsTyped(t *testing.T) {
	const sha = "0000000000000000000000000000000000000000000000000000000000000000"
	t.Run("negative size", func(t *testing.T) {
		w := &handWorker{answer: func(method string, _ json.RawMessage) string {
			if method == "exec_step" {
				return listing(tproxy.Artifact{Path: "x", Size: -5, SHA256: sha})
			}
			return chunk("owned", true)
		}}
		st, err := run(t, t.Context(), w.transport(), host.RunSpec{SessionID: "s1", Manifest: oneStep()})
		var ae *host.ArtifactError
		if !errors.As(err, &ae) || ae.Path != "x" || !strings.Contains(err.Error(), "negative size") {
			t.Fatalf("err = %v, want an *host.ArtifactError about the negative size", err)
		}
		if st.Failure.Kind != host.FailureArtifact || w.count("fetch_artifact") != 0 {
			t.Errorf("failure %+v after %d fetches", st.Failure, w.count("fetch_artifact"))
		}
	})
	t.Run("disk full", func(t *testing.T) {
		defer host.FailArtifactWrites(syscall.ENOSPC)()
		m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "s", Driver: "files", Config: map[string]any{"files": map[string]any{"out.csv": "1,2\n"}}}}}
		dir := filepath.Join(t.TempDir(), "s")
		st, err := run(t, t.Context(), inMemory(), host.RunSpec{Dir: dir, Manifest: m})
		var ae *host.ArtifactError
		if !errors.As(err, &ae) || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "writing the file") {
			t.Fatalf("err = %v, want an *host.ArtifactError wrapping ENOSPC", err)
		}
		if st.Failure.Kind != host.FailureArtifact {
			t.Errorf("failure %+v", st.Failure)
		}
		if entries, _ := os.ReadDir(filepath.Join(dir, host.ArtifactsDir, "s")); len(entries) != 0 {
			t.Errorf("a file that failed to be written was left: %v", entries)
		}
	})
}

// TestRunStateMachine: Run's phases run once each, in order; misuse is
// refused with host.ErrRunState and changes nothing. A second Execute used
// to run every step again (steps_completed 4/2); Execute after Collect
// made Collect's answer disagree with status.json.
func TestRunStateMachine(t *testing.T) {
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "a", Driver: "emit"}, {ID: "b", Driver: "emit", Needs: []string{"a"}}}}
	type call func(ctx context.Context, r *host.Run) error
	prepare := func(ctx context.Context, r *host.Run) error { return r.Prepare(ctx) }
	execute := func(ctx context.Context, r *host.Run) error { return r.Execute(ctx) }
	collect := func(ctx context.Context, r *host.Run) error { _, err := r.Collect(ctx); return err }
	tests := []struct {
		name     string
		calls    []call
		refused  int // the index of the call refused with ErrRunState; -1 for none
		wantDone int // steps completed in status.json
	}{
		{"in order", []call{prepare, execute, collect}, -1, 2},
		{"Execute twice", []call{prepare, execute, execute, collect}, 2, 2},
		{"Prepare twice", []call{prepare, prepare, execute, collect}, 1, 2},
		{"Execute before Prepare", []call{execute, prepare, execute, collect}, 0, 2},
		{"Execute after Collect", []call{prepare, execute, collect, execute}, 3, 2},
		{"Prepare after Collect", []call{prepare, collect, prepare}, 2, 0},
		{"Collect twice", []call{prepare, execute, collect, collect}, -1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "s")
			r := host.NewRun(inMemory(), host.RunSpec{Dir: dir, Manifest: m, Options: quiet()})
			for i, c := range tt.calls {
				err := c(t.Context(), r)
				if refused := errors.Is(err, host.ErrRunState); refused != (i == tt.refused) {
					t.Errorf("call %d: err = %v", i, err)
				} else if !refused && err != nil {
					t.Errorf("call %d: %v", i, err)
				}
			}
			st, err := r.Collect(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			onDisk := readStatus(t, dir)
			if st.StepsCompleted != tt.wantDone || onDisk.StepsCompleted != tt.wantDone || onDisk.Outcome != st.Outcome {
				t.Errorf("steps completed: Collect says %d, status.json %d (outcome %s vs %s), want %d",
					st.StepsCompleted, onDisk.StepsCompleted, st.Outcome, onDisk.Outcome, tt.wantDone)
			}
		})
	}
	t.Run("concurrent", func(t *testing.T) {
		// Collect while Execute runs is refused, without a race; the
		// Client is there for the asking.
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		sink := newSignalSink(&logsink.Memory{}, "blocked")
		dir := filepath.Join(t.TempDir(), "s")
		r := host.NewRun(inMemory(), host.RunSpec{Dir: dir, Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "w", Driver: "block"}}},
			Sink: sink, Options: quiet()})
		if err := r.Prepare(ctx); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- r.Execute(ctx) }()
		<-sink.ch
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if st, err := r.Collect(t.Context()); st != nil || !errors.Is(err, host.ErrRunState) {
					t.Errorf("Collect during Execute: %v, %v", st, err)
				}
				if err := r.Execute(t.Context()); !errors.Is(err, host.ErrRunState) {
					t.Errorf("Execute during Execute: %v", err)
				}
				if r.Client() == nil {
					t.Error("no Client during Execute")
				}
			})
		}
		wg.Wait()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Execute: %v", err)
		}
		if st, err := r.Collect(t.Context()); st == nil || st.Outcome != host.OutcomeCancelled || !errors.Is(err, context.Canceled) {
			t.Errorf("Collect after Execute: %+v, %v", st, err)
		}
	})
}

// TestReturnedErrorMasked: the error RunManifest returns has the session's
// secrets masked in its text and in every string field errors.As reaches,
// whatever carried them: a dying worker's stderr tail, a worker's error
// message and data, a line that breaks the protocol. It used to quote the
// worker as it was.
func TestReturnedErrorMasked(t *testing.T) {
	const secret = "hunter2-Sekret-0451"
	tests := []struct {
		name string
		tr   transport.Transport
	}{
		{"stderr of a dying worker", wiretest.Transport(t, transport.Command("sh", "-c", `read -r l
id=$(printf '%s' "$l" | sed -n 's/.*"id":\([0-9][0-9]*\).*/\1/p')
printf '{"jsonrpc":"2.0","id":%s,"result":{"status":"pong","echo":"handshake","timestamp":"2025-01-01T00:00:00Z","protocol":1,"worker":{"name":"dies","version":"1","drivers":["d"]}}}\n' "$id"
read -r l
echo "fatal: cannot log in with `+secret+`" >&2
exit 3`), wiretest.HostFrames)},
		{"worker's error", (&handWorker{answer: func(string, json.RawMessage) string {
			return `"error":{"code":-32004,"message":"step failed: login ` + secret + ` refused","data":{"step_id":"s","error_type":"Auth` + secret + `","message":"login ` + secret + ` refused"}}`
		}}).transport()},
		{"protocol violation", (&handWorker{
			before: func(string) string { return "password=" + secret + " is not JSON\n" },
			answer: func(string, json.RawMessage) string { return "" },
		}).transport()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := run(t, t.Context(), tt.tr, host.RunSpec{SessionID: "s1", Manifest: oneStep(),
				Config: map[string]any{"password": secret}})
			if err == nil {
				t.Fatal("the run succeeded")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("err.Error() shows the secret: %v", err)
			}
			for _, v := range reachable(err) {
				if where := findString(reflect.ValueOf(v), secret, 0); where != "" {
					t.Errorf("%T reachable with errors.As shows the secret in %s", v, where)
				}
			}
			b, _ := json.Marshal(st)
			if strings.Contains(string(b), secret) {
				t.Errorf("status shows the secret: %s", b)
			}
			if !strings.Contains(err.Error(), tproxy.Masked) {
				t.Errorf("nothing masked in %v: did the worker leak at all?", err)
			}
		})
	}
	t.Run("types kept", func(t *testing.T) {
		_, err := run(t, t.Context(), tests[0].tr, host.RunSpec{SessionID: "s1", Manifest: oneStep(), Config: map[string]any{"password": secret}})
		var xe *transport.ExitError
		if !errors.As(err, &xe) || xe.Status.Code != 3 || !strings.Contains(xe.Stderr, "fatal: cannot log in with "+tproxy.Masked) || !errors.Is(err, host.ErrClosed) {
			t.Errorf("err = %v: want a masked *transport.ExitError with code 3 and host.ErrClosed", err)
		}
	})
}

// reachable returns every error in err's tree.
func reachable(err error) []error {
	out := []error{err}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		if e := u.Unwrap(); e != nil {
			out = append(out, reachable(e)...)
		}
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			out = append(out, reachable(e)...)
		}
	}
	return out
}

// findString names the string or byte field under v that contains s, or
// returns "".
func findString(v reflect.Value, s string, depth int) string {
	if depth > 8 || !v.IsValid() {
		return ""
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return ""
		}
		return findString(v.Elem(), s, depth+1)
	case reflect.String:
		if strings.Contains(v.String(), s) {
			return "a string"
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			if strings.Contains(string(v.Bytes()), s) {
				return "a byte slice"
			}
			return ""
		}
		for i := range v.Len() {
			if w := findString(v.Index(i), s, depth+1); w != "" {
				return w
			}
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if w := findString(v.Field(i), s, depth+1); w != "" {
				return v.Type().Field(i).Name + ": " + w
			}
		}
	}
	return ""
}
