package worker_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/worker"
)

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// artifactWorker's "write" driver writes a few files under its artifact
// directory, including a symlink inside it and one pointing out of it.
func artifactWorker() *worker.Worker {
	w := worker.New("t", "1")
	w.RegisterFunc("write", func(ctx context.Context, s *worker.Step) error {
		dir := s.ArtifactDir()
		if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("hello artifacts\n"), 0o644); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "sub", "b.bin"), []byte{0, 1, 2, 255}, 0o644); err != nil {
			return err
		}
		if err := os.Symlink("a.txt", filepath.Join(dir, "link.txt")); err != nil {
			return err
		}
		if err := os.Symlink("/etc/passwd", filepath.Join(dir, "escape")); err != nil {
			return err
		}
		if fail, _ := s.Config()["fail"].(bool); fail {
			return errors.New("failed after writing")
		}
		return nil
	})
	return w
}

func call(t *testing.T, h *rawHost, id int, method string, params any) (notifs []map[string]any, resp map[string]any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	if err != nil {
		t.Fatal(err)
	}
	h.send(t, string(b))
	return h.recv(t, id)
}

func decode[T any](t *testing.T, v any) T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// fetch reads a whole artifact in chunks of n bytes.
func fetch(t *testing.T, h *rawHost, id *int, step, path string, n int) ([]byte, error) {
	t.Helper()
	var data []byte
	for {
		*id++
		_, resp := call(t, h, *id, "fetch_artifact", tproxy.FetchArtifactParams{StepID: step, Path: path, Offset: int64(len(data)), Length: n})
		if e, ok := resp["error"].(map[string]any); ok {
			return nil, fmt.Errorf("%v: %v", e["code"], e["message"])
		}
		res := decode[tproxy.FetchArtifactResult](t, resp["result"])
		data = append(data, res.Data...)
		if res.EOF {
			return data, nil
		}
	}
}

func TestArtifactsListedAndFetched(t *testing.T) {
	h := serveRaw(t, artifactWorker())
	call(t, h, 1, "prepare", map[string]any{"session_id": "s1", "manifest": map[string]any{"steps": []any{}}})
	notifs, resp := call(t, h, 2, "exec_step", map[string]any{"step_id": "w", "driver": "write", "config": map[string]any{"table": "users"}})
	res := decode[tproxy.ExecStepResult](t, resp["result"])

	cleaned := []byte("{\n  \"table\": \"users\"\n}\n")
	want := []tproxy.Artifact{
		{Path: "a.txt", Size: 16, SHA256: sum([]byte("hello artifacts\n"))},
		{Path: "cleaned_config.json", Size: int64(len(cleaned)), SHA256: sum(cleaned)},
		{Path: "link.txt", Size: 16, SHA256: sum([]byte("hello artifacts\n"))},
		{Path: "sub/b.bin", Size: 4, SHA256: sum([]byte{0, 1, 2, 255})},
	}
	if d := cmp.Diff(want, res.Artifacts); d != "" {
		t.Errorf("artifacts (-want +got):\n%s", d)
	}
	var refused []string
	for _, n := range notifs {
		if p, _ := n["params"].(map[string]any); n["method"] == "event" && p["name"] == "artifact_refused" {
			d := p["data"].(map[string]any)
			refused = append(refused, fmt.Sprint(d["path"]))
		}
	}
	if d := cmp.Diff([]string{"escape"}, refused); d != "" {
		t.Errorf("artifact_refused events (-want +got):\n%s", d)
	}

	id := 2
	for _, a := range want {
		got, err := fetch(t, h, &id, "w", a.Path, 3)
		if err != nil {
			t.Fatalf("fetch %s: %v", a.Path, err)
		}
		if sum(got) != a.SHA256 {
			t.Errorf("fetch %s in 3-byte chunks: got %q", a.Path, got)
		}
	}
}

func TestFailedStepListsArtifacts(t *testing.T) {
	h := serveRaw(t, artifactWorker())
	call(t, h, 1, "prepare", map[string]any{"session_id": "s1", "manifest": map[string]any{"steps": []any{}}})
	_, resp := call(t, h, 2, "exec_step", map[string]any{"step_id": "w", "driver": "write", "config": map[string]any{"fail": true}})
	e := resp["error"].(map[string]any)
	f := decode[tproxy.StepFailure](t, e["data"])
	var paths []string
	for _, a := range f.Artifacts {
		paths = append(paths, a.Path)
	}
	if d := cmp.Diff([]string{"a.txt", "cleaned_config.json", "link.txt", "sub/b.bin"}, paths); d != "" {
		t.Errorf("failed step's artifacts (-want +got):\n%s", d)
	}
}

func TestFetchArtifactRefusesEscapes(t *testing.T) {
	h := serveRaw(t, artifactWorker())
	call(t, h, 1, "prepare", map[string]any{"session_id": "s1", "manifest": map[string]any{"steps": []any{}}})
	call(t, h, 2, "exec_step", map[string]any{"step_id": "w", "driver": "write"})
	tests := []struct {
		step, path, wantIn string
	}{
		{"w", "../x", "not a clean relative path"},
		{"w", "sub/../../cleaned_config.json", "not a clean relative path"},
		{"w", "/etc/passwd", "absolute"},
		{"w", "", "empty"},
		{"w", `sub\b.bin`, "backslash"},
		{"w", "escape", "escapes"},
		{"w", "missing.txt", "no such file"},
		{"../w", "a.txt", "step id"},
		{"nostep", "a.txt", "has no artifacts"},
	}
	id := 2
	for _, tt := range tests {
		_, err := fetch(t, h, &id, tt.step, tt.path, 0)
		if err == nil || !strings.Contains(err.Error(), tt.wantIn) {
			t.Errorf("fetch(%q, %q) = %v, want an error containing %q", tt.step, tt.path, err, tt.wantIn)
		}
	}
}

// TestSecretsNeverOnTheWire plants secrets in the session config, the
// manifest, and a step config, has the driver leak them every way it can,
// and checks the raw bytes the worker wrote.
func TestSecretsNeverOnTheWire(t *testing.T) {
	const (
		pw    = "hunter2-session-password"
		token = "tok-9f8e7d6c5b4a"
		dsn   = "postgres://app:s3cr3t-dsn@db/prod"
	)
	w := worker.New("t", "1")
	w.RegisterFunc("leak", func(ctx context.Context, s *worker.Step) error {
		all := pw + " " + token + " " + dsn
		s.Event("leaking", map[string]any{"all": all, "password": "whatever"})
		s.Metric("leaks", 1, worker.Tag("who", token))
		s.Logger().Info("connecting with "+all, "dsn", dsn)
		os.WriteFile(filepath.Join(s.ArtifactDir(), "note.txt"), []byte("a file may hold anything: the worker masks what it sends, not what drivers write"), 0o644)
		return fmt.Errorf("login failed for %s", all)
	})
	h := serveRaw(t, w)
	var wire strings.Builder
	collect := func(notifs []map[string]any, resp map[string]any) {
		for _, m := range append(notifs, resp) {
			b, _ := json.Marshal(m)
			wire.Write(b)
		}
	}
	collect(call(t, h, 1, "prepare", map[string]any{
		"session_id": "s1",
		"config":     map[string]any{"db_password": pw},
		"secrets":    tproxy.Secrets{Pointers: []string{"/source/dsn"}},
		"manifest": tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "x", Driver: "leak",
			Config: map[string]any{"source": map[string]any{"dsn": dsn}}}}},
	}))
	collect(call(t, h, 2, "exec_step", map[string]any{"step_id": "x", "driver": "leak",
		"config": map[string]any{"source": map[string]any{"dsn": dsn}, "api_token": token}}))
	id := 2
	cfg, err := fetch(t, h, &id, "x", "cleaned_config.json", 0)
	if err != nil {
		t.Fatal(err)
	}
	wire.Write(cfg)

	for _, secret := range []string{pw, token, dsn} {
		if strings.Contains(wire.String(), secret) {
			t.Errorf("secret %q went over the wire", secret)
		}
		if b64 := base64.StdEncoding.EncodeToString([]byte(secret)); strings.Contains(wire.String(), b64) {
			t.Errorf("secret %q went over the wire in base64", secret)
		}
	}
	if !strings.Contains(wire.String(), tproxy.Masked) {
		t.Errorf("no %s on the wire at all: %s", tproxy.Masked, wire.String())
	}
	var got map[string]any
	if err := json.Unmarshal(cfg, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"source": map[string]any{"dsn": tproxy.Masked}, "api_token": tproxy.Masked}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("cleaned_config.json (-want +got):\n%s", d)
	}
}

// TestStepDirectories: Step.Dir exists once asked for, and only then; the
// artifact directory exists at every run, even after a driver removed it.
func TestStepDirectories(t *testing.T) {
	w := worker.New("t", "1")
	var seen []string
	w.RegisterFunc("look", func(ctx context.Context, s *worker.Step) error {
		base := filepath.Dir(filepath.Dir(s.ArtifactDir())) // the session directory
		_, err := os.Stat(filepath.Join(base, s.ID()))
		seen = append(seen, fmt.Sprintf("before Dir: exists=%v", err == nil))
		if fi, err := os.Stat(s.Dir()); err != nil || !fi.IsDir() {
			return fmt.Errorf("Dir() %s: %v", s.Dir(), err)
		}
		if _, err := os.Stat(filepath.Join(s.ArtifactDir(), worker.CleanedConfigFile)); err != nil {
			return err
		}
		return os.RemoveAll(s.ArtifactDir())
	})
	h := serveRaw(t, w)
	call(t, h, 1, "prepare", map[string]any{"session_id": "s", "manifest": map[string]any{"steps": []any{}}})
	for id := 2; id <= 3; id++ {
		if _, resp := call(t, h, id, "exec_step", map[string]any{"step_id": "a", "driver": "look"}); resp["result"] == nil {
			t.Fatalf("run %d: %v", id-1, resp)
		}
	}
	if got, want := strings.Join(seen, "; "), "before Dir: exists=false; before Dir: exists=true"; got != want {
		t.Errorf("step directory %s, want %s", got, want)
	}
}
