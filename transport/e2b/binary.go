package e2b

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
)

// WorkerBinary returns a static linux/amd64 executable of the running
// program, for programs that are their own worker (they re-execute
// themselves in worker mode, as examples/e2b does), so that go run works
// from any laptop.
//
// It is the running executable itself when that already is a static
// linux/amd64 ELF file. Otherwise (another OS or architecture, or a
// binary linked against libc because cgo was on) it builds the program's
// main package with BuildWorker into the user cache directory and returns
// that path; the go command must then be on PATH and the current
// directory inside the program's module.
func WorkerBinary(ctx context.Context) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("e2b: worker binary: %w", err)
	}
	if runtime.GOOS == "linux" && runtime.GOARCH == "amd64" {
		if ok, _ := IsStaticLinuxAMD64(self); ok {
			return self, nil
		}
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Path == "" || bi.Path == "command-line-arguments" {
		return "", errors.New("e2b: worker binary: the running program's main package is unknown; build the worker with BuildWorker")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	h := sha256.Sum256([]byte(bi.Path))
	out := filepath.Join(cache, "tproxy", "workers", filepath.Base(bi.Path)+"-"+hex.EncodeToString(h[:6])+"-linux-amd64")
	if err := BuildWorker(ctx, bi.Path, out); err != nil {
		return "", err
	}
	return out, nil
}

// BuildWorker builds the main package pkg (an import path or a ./
// directory, as for go build) as a static linux/amd64 executable at out,
// with CGO_ENABLED=0 GOOS=linux GOARCH=amd64 and -trimpath. The go build
// cache makes a rebuild of unchanged code quick.
func BuildWorker(ctx context.Context, pkg, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("e2b: build worker: %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("e2b: go build %s for linux/amd64: %w\n%s", pkg, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if ok, err := IsStaticLinuxAMD64(out); !ok {
		return fmt.Errorf("e2b: build worker: %s is not a static linux/amd64 executable: %v", out, err)
	}
	return nil
}

// IsStaticLinuxAMD64 reports whether the file at path is an x86-64 ELF
// executable without a dynamic loader (PT_INTERP), so it runs in any
// linux/amd64 sandbox template whatever its libc. The error says why not.
func IsStaticLinuxAMD64(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		return false, fmt.Errorf("machine %v, class %v", f.Machine, f.Class)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, errors.New("dynamically linked (has an ELF interpreter)")
		}
	}
	return true, nil
}
