package e2b_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tproxy/tproxy/transport/e2b"
)

// TestBuildWorker cross-builds a worker program and checks it is a static
// linux/amd64 executable.
func TestBuildWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build")
	}
	out := filepath.Join(t.TempDir(), "worker")
	if err := e2b.BuildWorker(t.Context(), "github.com/tproxy/tproxy/examples/local", out); err != nil {
		t.Fatal(err)
	}
	if ok, err := e2b.IsStaticLinuxAMD64(out); !ok {
		t.Fatalf("built worker is not static linux/amd64: %v", err)
	}
	if err := e2b.BuildWorker(t.Context(), "github.com/tproxy/tproxy/no/such/package", out+"2"); err == nil {
		t.Error("building a missing package succeeded")
	}
}

// TestIsStaticLinuxAMD64 refuses what is not a static x86-64 executable.
func TestIsStaticLinuxAMD64(t *testing.T) {
	if ok, _ := e2b.IsStaticLinuxAMD64("/bin/sh"); ok {
		t.Error("/bin/sh (dynamically linked) reported static")
	}
	notELF := filepath.Join(t.TempDir(), "x")
	os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755)
	if ok, err := e2b.IsStaticLinuxAMD64(notELF); ok || err == nil {
		t.Errorf("a script: %v, %v", ok, err)
	}
}
