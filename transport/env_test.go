package transport_test

import (
	"context"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tproxy/tproxy/transport"
)

// TestSubprocessEnvironment checks that a worker gets the minimal base
// environment plus Env by default, and the host's whole environment only
// with InheritEnv (which Command sets).
func TestSubprocessEnvironment(t *testing.T) {
	t.Setenv("TPROXY_TEST_CLOUD_KEY", "hunter2-secret")
	t.Setenv("LC_TPROXY_TEST", "kept")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	mode := []string{"TPROXY_TEST_CHILD=env", "GORACE=atexit_sleep_ms=0"}
	tests := []struct {
		name    string
		tr      *transport.Subprocess
		want    []string // entries the worker must have
		wantNot []string // variable names it must not have
	}{
		{
			name:    "minimal by default",
			tr:      &transport.Subprocess{Path: exe, Env: mode},
			want:    []string{"PATH=" + os.Getenv("PATH"), "LC_TPROXY_TEST=kept"},
			wantNot: []string{"TPROXY_TEST_CLOUD_KEY"},
		},
		{
			name:    "Env adds and overrides",
			tr:      &transport.Subprocess{Path: exe, Env: append(slices.Clone(mode), "PATH=/nowhere", "NAMED=yes")},
			want:    []string{"PATH=/nowhere", "NAMED=yes"},
			wantNot: []string{"TPROXY_TEST_CLOUD_KEY"},
		},
		{
			name: "InheritEnv passes everything",
			tr:   &transport.Subprocess{Path: exe, Env: mode, InheritEnv: true},
			want: []string{"TPROXY_TEST_CLOUD_KEY=hunter2-secret", "PATH=" + os.Getenv("PATH")},
		},
		{
			name: "Command inherits, for ssh and kubectl",
			tr: func() *transport.Subprocess {
				c := transport.Command(exe)
				c.Env = mode
				return c
			}(),
			want: []string{"TPROXY_TEST_CLOUD_KEY=hunter2-secret"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.tr.Start(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			out, err := io.ReadAll(p)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, kv := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				k, v, _ := strings.Cut(kv, "=")
				got[k] = v
			}
			for _, kv := range tt.want {
				k, v, _ := strings.Cut(kv, "=")
				if got[k] != v {
					t.Errorf("worker's %s = %q, want %q", k, got[k], v)
				}
			}
			for _, k := range tt.wantNot {
				if _, ok := got[k]; ok {
					t.Errorf("worker has %s; the host's environment leaked", k)
				}
			}
		})
	}
}
