package main

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/e2bfake"
)

// TestRunE2B runs "tproxy run -e2b" end to end against the local E2B,
// which -e2b-api-url and -e2b-envd-url name: the worker (this test
// binary, uploaded into the sandbox and run there) succeeds or fails a
// step, status.json records the sandbox, and the sandbox is killed
// either way.
//
// The fake runs the uploaded file as a local process, so any executable
// for this machine serves; a real E2B would need a static linux/amd64
// one (see e2b.BuildWorker).
func TestRunE2B(t *testing.T) {
	srv, err := e2bfake.New(e2bfake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	t.Setenv("E2B_API_KEY", srv.APIKey())
	// The flags must win over the environment: nothing listens here, and
	// no per-sandbox host resolves under this domain.
	t.Setenv("E2B_API_URL", "http://127.0.0.1:1")
	t.Setenv("E2B_DOMAIN", "e2b.invalid")
	exe := testExe(t)

	// run runs manifest in a sandbox of srv and checks what every run
	// must leave: the sandbox recorded in status.json, uploaded to,
	// killed, and none left alive.
	run := func(t *testing.T, manifest string) (result, host.Status) {
		t.Helper()
		creates := srv.Calls(e2bfake.OpCreate)
		dir := filepath.Join(t.TempDir(), "session")
		// -timeout bounds the session should the fake or the worker hang.
		r := runT(t, false, "run", "-e2b", "-e2b-api-url", srv.URL, "-e2b-envd-url", srv.URL,
			"-worker", exe, "-env", quietRace, "-timeout", "2m", "-dir", dir, manifest, "--", workerArg)
		if left := srv.Sandboxes(); len(left) != 0 {
			t.Errorf("sandboxes alive after the run: %v", left)
		}
		if got := srv.Calls(e2bfake.OpCreate) - creates; got != 1 {
			t.Fatalf("%d sandboxes created in the fake; want 1\nstdout:\n%s\nstderr:\n%s", got, r.stdout, r.stderr)
		}
		st := readStatus(t, dir)
		info, ok := st.Transport.(map[string]any)
		if !ok {
			t.Fatalf("status.json transport: %#v; want an object", st.Transport)
		}
		id, _ := info["sandbox_id"].(string)
		if id == "" {
			t.Fatalf("status.json transport has no sandbox_id: %v", info)
		}
		if info["worker"] != "uploaded" {
			t.Errorf("status.json transport worker %v; want uploaded", info["worker"])
		}
		if _, ok := info["killed"]; !ok {
			t.Errorf("status.json transport does not record the sandbox's kill: %v", info)
		}
		killed := false
		for _, req := range srv.Requests() {
			killed = killed || req.Method == http.MethodDelete && req.Path == "/sandboxes/"+id
		}
		if !killed {
			t.Errorf("sandbox %s of status.json was never killed through the API", id)
		}
		return r, st
	}

	t.Run("success", func(t *testing.T) {
		r, st := run(t, demoManifest(t, "demo.yaml", "42"))
		if r.code != exitOK {
			t.Fatalf("exit %d; want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stdout, "✓ extract complete: 42 rows in ") || !strings.Contains(r.stdout, "success: 3/3 steps in ") {
			t.Errorf("stdout:\n%s", r.stdout)
		}
		if st.Outcome != host.OutcomeSuccess || st.StepsCompleted != 3 {
			t.Errorf("status.json: outcome %q, %d steps completed; want success, 3", st.Outcome, st.StepsCompleted)
		}
	})

	t.Run("failing step", func(t *testing.T) {
		m := writeFile(t, t.TempDir(), "fail.yaml", "steps:\n  - {id: first, driver: extract, config: {rows: 3}}\n  - {id: boom, driver: fail, needs: [first]}\n  - {id: never, driver: load, needs: [boom]}\n")
		r, st := run(t, m)
		if r.code != exitFail {
			t.Fatalf("exit %d; want 1\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stdout, "✗ boom failed: ") || !strings.Contains(r.stdout, `failure: step_failed at step "boom"`) {
			t.Errorf("stdout:\n%s", r.stdout)
		}
		// The worker's stderr comes out of the sandbox too.
		if !strings.Contains(r.stderr, "fail driver: about to fail") {
			t.Errorf("stderr lacks the worker's: %q", r.stderr)
		}
		if st.Outcome != host.OutcomeFailed || st.Failure == nil || st.Failure.StepID != "boom" || !strings.Contains(st.StderrTail, "about to fail") {
			t.Errorf("status.json: %+v", st)
		}
		if st.StepsCompleted != 1 || st.Steps[2].Status != host.StepNotRun {
			t.Errorf("status.json: %d steps completed, step never %q; want 1 and %q", st.StepsCompleted, st.Steps[2].Status, host.StepNotRun)
		}
	})
}
