package main

import (
	"os"
	"strings"
	"testing"

	"github.com/tproxy/tproxy/worker/conform"
)

// The conformance kit's command, moved here from cmd/tproxy-conform with
// its tests; the test binary's worker roles are set up in TestMain.

// conformRun runs "tproxy conform args...".
func conformRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	r := runT(t, false, append([]string{"conform"}, args...)...)
	return r.code, r.stdout, r.stderr
}

func TestConformUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"-v"},
		{"-run", "(", "--", "worker"},
		{"-run", "no_such_check", "--", "worker"},
		{"-timeout", "0s", "--", "worker"},
		{"-no-such-flag"},
	} {
		code, stdout, stderr := conformRun(t, args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "usage: tproxy conform") {
			t.Errorf("run %q: exit %d, stdout %q, stderr %q; want 2, nothing, the usage", args, code, stdout, stderr)
		}
	}
	if _, _, stderr := conformRun(t); !strings.Contains(stderr, "no command") {
		t.Errorf("no command: stderr %q does not say so", stderr)
	}
}

func TestConformList(t *testing.T) {
	code, stdout, _ := conformRun(t, "-list")
	if code != 0 {
		t.Fatalf("-list: exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	checks := conform.Checks()
	if len(lines) != len(checks) {
		t.Fatalf("-list printed %d lines for %d checks:\n%s", len(lines), len(checks), stdout)
	}
	for i, c := range checks {
		if f := strings.Fields(lines[i]); len(f) < 3 || f[0] != c.Name || !strings.Contains(lines[i], c.Section) || !strings.Contains(lines[i], c.Doc) {
			t.Errorf("line %q; want %s, %s and its doc", lines[i], c.Name, c.Section)
		}
	}

	_, stdout, _ = conformRun(t, "-list", "-run", "^cancel_")
	if got := strings.Count(stdout, "\n"); got != 2 || !strings.HasPrefix(stdout, "cancel_running ") {
		t.Errorf("-list -run ^cancel_:\n%s", stdout)
	}
}

// workerExe makes the commands that conform starts this test binary, as a
// worker of kind ("full" or "bare").
func workerExe(t *testing.T, kind string) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(conformEnv, kind) // the worker inherits the environment
	// Under -race a program sleeps a second when it exits with code 0.
	t.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	return exe
}

func TestConformPasses(t *testing.T) {
	exe := workerExe(t, "full")
	code, stdout, stderr := conformRun(t, "-run", "^(handshake|cleanup|eof_exit)$", "--", exe)
	if code != 0 {
		t.Fatalf("exit %d; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	want := []string{"PASS  handshake ", "PASS  cleanup   ", "PASS  eof_exit  ", "3 checks: 3 passed, 0 failed"}
	if len(lines) != len(want) {
		t.Fatalf("output:\n%s", stdout)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d is %q; want it to start with %q", i, lines[i], w)
		}
	}
}

func TestConformFails(t *testing.T) {
	exe := workerExe(t, "bare")
	code, stdout, _ := conformRun(t, "-v", "-run", "^(handshake|version_mismatch)$", "--", exe)
	if code != 1 {
		t.Errorf("exit %d; want 1", code)
	}
	for _, want := range []string{
		"FAIL  handshake         §13: ping lists no driver \"conform.artifacts\"",
		"      | bare worker: no conformance drivers here",
		"PASS  version_mismatch  (",
		"2 checks: 1 passed, 1 failed\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
}
