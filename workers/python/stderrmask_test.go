package pythonworker_test

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/transport"
)

// TestPythonWorkerMasksSecretsInStderr runs testdata/stderr_mask_worker.py
// behind the real host. Its drivers print the step's secret, in several
// forms, to sys.stdout, sys.stderr, fds 1 and 2 and through a child
// process, split across writes 100 ms apart, and in a 100 KiB line: none
// of it reaches the transport's Stderr writer nor status.json's
// stderr_tail unmasked.
func TestPythonWorkerMasksSecretsInStderr(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not on PATH")
	}
	script, err := filepath.Abs(filepath.Join("testdata", "stderr_mask_worker.py"))
	if err != nil {
		t.Fatal(err)
	}
	const secret = `S3cret/Value+12345 "q"\&<é>`
	stderr := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker stderr:\n%s", stderr.String())
		}
	})
	tr := wiretest.Transport(t, &transport.Subprocess{Path: py, Args: []string{script}, Stderr: stderr}, wiretest.Both)
	cfg := func(kv ...any) map[string]any {
		m := map[string]any{"password": secret}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{
		{ID: "leak", Driver: "leak", Config: cfg()},
		{ID: "split", Driver: "split", Needs: []string{"leak"}, Config: cfg("pause", 0.1)},
		{ID: "long", Driver: "long", Needs: []string{"split"}, Config: cfg("size", 100<<10)},
		{ID: "tail", Driver: "leak", Needs: []string{"long"}, Config: cfg()},
	}}
	dir := filepath.Join(t.TempDir(), "session")
	if _, err := host.RunManifest(t.Context(), tr, host.RunSpec{
		SessionID: "py-mask",
		Dir:       dir,
		Manifest:  m,
		Options:   []host.Option{host.WithLogger(slog.New(slog.DiscardHandler))},
	}); err != nil {
		t.Fatalf("run: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, host.StatusFile))
	if err != nil {
		t.Fatal(err)
	}
	var st host.Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}

	quoted := strconv.Quote(secret)
	jsonASCII, _ := json.Marshal(secret)
	b64 := base64.StdEncoding.EncodeToString([]byte(secret))
	forms := map[string]string{
		"raw":                  secret,
		"Go-quoted":            quoted[1 : len(quoted)-1],
		"JSON (Python)":        strings.ReplaceAll(string(jsonASCII[1:len(jsonASCII)-1]), "é", `\u00e9`),
		"Python repr":          strings.ReplaceAll(secret, `\`, `\\`),
		"query-escaped":        url.QueryEscape(secret),
		"path-escaped":         url.PathEscape(secret),
		"hex":                  hex.EncodeToString([]byte(secret)),
		"HEX":                  strings.ToUpper(hex.EncodeToString([]byte(secret))),
		"base64":               b64,
		"base64, URL, no pad":  base64.RawURLEncoding.EncodeToString([]byte(secret)),
		"the secret's middle":  "Value+123",
		"the JSON form's tail": `\"q\"\\&`,
	}
	got := stderr.String()
	for name, text := range map[string]string{"the Stderr writer": got, "status.json stderr_tail": st.StderrTail} {
		for form, f := range forms {
			if strings.Contains(text, f) {
				t.Errorf("%s holds the secret, %s: %q", name, form, f)
			}
		}
	}
	// The output itself is all there, masked.
	for _, want := range []string{
		"stdout print: " + tproxy.Masked + "\n",
		"fd2: " + tproxy.Masked + "\n",
		"child: " + tproxy.Masked + "\n",
		"child err: " + tproxy.Masked + "\n",
		"connecting with " + tproxy.Masked + " now\n",
		"x" + tproxy.Masked + "x",
		"leak done\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the Stderr writer got no %q", want)
		}
	}
	if n := strings.Count(got, "leak done\n"); n != 2 {
		t.Errorf("%d lines \"leak done\", want 2 (one per leak step)", n)
	}
	if !strings.Contains(st.StderrTail, "leak done") {
		t.Errorf("status.json stderr_tail = %.300q..., want the last step's output", st.StderrTail)
	}
}
