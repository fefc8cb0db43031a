package e2b_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/internal/e2bfake"
	"github.com/tproxy/tproxy/transport/e2b"
)

// bakedPath is where the template tests bake the worker in.
const bakedPath = "/opt/tproxy/worker"

// bakedServer is a local E2B whose template has the test binary at
// bakedPath, executable.
func bakedServer(t testing.TB) *e2bfake.Server {
	t.Helper()
	bin, err := os.ReadFile(exe(t))
	if err != nil {
		t.Fatal(err)
	}
	return newServer(t, e2bfake.Options{TemplateFiles: map[string]e2bfake.File{bakedPath: {Data: bin, Mode: 0o755}}})
}

// bakedE2B runs the worker baked into srv's template.
func bakedE2B(t testing.TB, srv *e2bfake.Server, mode string) *e2b.E2B {
	tr := newE2B(t, srv, mode)
	tr.Binary, tr.WorkerPath = "", bakedPath
	return tr
}

// TestWorkerInTemplate: with WorkerPath naming a worker baked into the
// template, nothing is uploaded and no helper process runs: one Stat,
// then the worker's start. A WorkerPath the template lacks, or one not
// executable, fails the start with the template's name.
func TestWorkerInTemplate(t *testing.T) {
	srv := bakedServer(t)
	c, err := host.Start(t.Context(), tapped(t, bakedE2B(t, srv, "worker")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ping(t.Context(), "baked"); err != nil {
		t.Fatal(err)
	}
	info := sandboxOf(t, c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if info.Worker != "template" || info.BytesUploaded != 0 {
		t.Errorf("info %+v, want the worker found in the template and nothing uploaded", info)
	}
	if n, m, s := srv.Calls(e2bfake.OpUpload), srv.Calls(e2bfake.OpStart), srv.Calls(e2bfake.OpStat); n != 0 || m != 1 || s != 1 {
		t.Errorf("%d uploads, %d Starts, %d Stats; want 0, 1 (the worker), 1", n, m, s)
	}

	for _, tt := range []struct{ name, path, want string }{
		{"missing", "/opt/none/worker", "has no worker"},
		{"not executable", "/home/user", "not an executable file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := bakedE2B(t, srv, "worker")
			tr.WorkerPath = tt.path
			_, err := tr.Start(t.Context())
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `"base"`) {
				t.Errorf("err = %v, want %q naming the template", err, tt.want)
			}
		})
	}
	tr := bakedE2B(t, srv, "worker")
	tr.Binary = exe(t)
	if _, err := tr.Start(t.Context()); err == nil {
		t.Error("Start with both Binary and WorkerPath succeeded")
	}
	if ids := srv.Sandboxes(); len(ids) != 0 {
		t.Errorf("sandboxes left: %v", ids)
	}
}

// TestInputFiles: E2B.Files puts local files and directories under
// FilesDir before the worker starts, byte for byte, counts them in
// BytesUploaded, and refuses a name that leaves FilesDir before any
// sandbox is created.
func TestInputFiles(t *testing.T) {
	srv := newServer(t, fakeOptions())
	dir := t.TempDir()
	files := map[string]string{"one.txt": "first\n", "sub/two.csv": "a,b\n1,2\n", "sub/deeper/three": strings.Repeat("3", 70_000)}
	var total int64
	for name, data := range files {
		p := filepath.Join(dir, "data", filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		total += int64(len(data))
	}
	single := filepath.Join(dir, "single.json")
	os.WriteFile(single, []byte(`{"k":1}`), 0o644)
	total += int64(len(`{"k":1}`))

	tr := newE2B(t, srv, "worker")
	tr.Files = map[string]string{"data": filepath.Join(dir, "data"), "cfg/single.json": single}
	p, err := tr.Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	info := infoOf(t, p)
	root, err := srv.Root(info.SandboxID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"cfg/single.json": `{"k":1}`}
	for name, data := range files {
		want["data/"+name] = data
	}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(root, "home/user/inputs", filepath.FromSlash(name)))
		if err != nil || string(got) != data {
			t.Errorf("%s in the sandbox: %d bytes, %v; want %d bytes", name, len(got), err, len(data))
		}
	}
	if info.BytesUploaded <= total {
		t.Errorf("BytesUploaded = %d, want the worker plus %d bytes of input files", info.BytesUploaded, total)
	}

	for _, bad := range []string{"../escape", "/etc/passwd", "a/../../b", ""} {
		tr := newE2B(t, srv, "worker")
		tr.Files = map[string]string{bad: single}
		before := srv.Calls(e2bfake.OpCreate)
		if _, err := tr.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "not a path inside FilesDir") {
			t.Errorf("Files[%q]: err = %v, want a refusal", bad, err)
		}
		if srv.Calls(e2bfake.OpCreate) != before {
			t.Errorf("Files[%q]: a sandbox was created before the refusal", bad)
		}
	}
}

// TestInfoCost: a session's Info says what it cost: sandbox-seconds from
// creation to kill, the template and envd version, and it is the value a
// host records through TransportInfo; a pool reports its idle
// sandbox-seconds.
func TestInfoCost(t *testing.T) {
	srv := newServer(t, fakeOptions())
	p, err := newE2B(t, srv, "worker").Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	info := infoOf(t, p)
	if info.Killed.IsZero() || info.Killed.Before(info.Created) || info.SandboxSeconds <= 0 ||
		info.SandboxSeconds != info.Killed.Sub(info.Created).Seconds() {
		t.Errorf("info %+v: want sandbox-seconds from Created to Killed", info)
	}
	if info.Template != "base" || info.EnvdVersion == "" || info.Worker != "uploaded" || info.SandboxID == "" {
		t.Errorf("info %+v", info)
	}
	ti, ok := p.(interface{ TransportInfo() any })
	if !ok {
		t.Fatal("the process has no TransportInfo method")
	}
	b, err := json.Marshal(ti.TransportInfo())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"sandbox_id"`, `"template"`, `"envd_version"`, `"sandbox_seconds"`, `"bytes_uploaded"`, `"worker"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("TransportInfo JSON %s lacks %s", b, key)
		}
	}

	pool := newPool(t, srv, 1)
	t0 := time.Now()
	waitFor(t, "idle time counted", func() bool { return pool.IdleSeconds() > 0 })
	pp, err := pool.Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pp.Close()
	if s := pool.IdleSeconds(); s <= 0 || s > time.Since(t0).Seconds()+60 {
		t.Errorf("IdleSeconds = %v", s)
	}
	if _, ok := e2b.InfoOf(subprocessProcess(t)); ok {
		t.Error("InfoOf accepted a subprocess")
	}
}

// TestStatusRecordsSandbox: a run over E2B records in status.json where
// the worker ran and what it cost: the transport's Info.
func TestStatusRecordsSandbox(t *testing.T) {
	srv := newServer(t, fakeOptions())
	dir := filepath.Join(t.TempDir(), "s")
	st, err := host.RunManifest(t.Context(), tapped(t, newE2B(t, srv, "worker")), host.RunSpec{Dir: dir, Manifest: demo.Manifest()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, host.StatusFile))
	if err != nil {
		t.Fatal(err)
	}
	var status struct {
		Transport *e2b.Info `json:"transport"`
	}
	if err := json.Unmarshal(b, &status); err != nil {
		t.Fatal(err)
	}
	info := status.Transport
	if info == nil || info.SandboxID == "" || info.SandboxSeconds <= 0 || info.Killed.IsZero() || info.Worker != "uploaded" || info.BytesUploaded == 0 {
		t.Errorf("status.json's transport: %+v (status %+v)", info, st.Transport)
	}
}
