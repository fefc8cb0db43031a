package worker

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestArtifactCache: hashes and listings are remembered once what they
// describe has been left alone for racyWindow, and made again whenever a
// file's content or a directory's entries changed, even to the same size,
// and however soon after they were described.
func TestArtifactCache(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("file stamps are read on Linux only; elsewhere nothing is cached")
	}
	dir := t.TempDir()
	write := func(name, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cache := &artifactCache{}
	list := func(want ...string) { // path, content, path, content...
		t.Helper()
		arts, err := listArtifacts(dir, tproxy.ArtifactLimits{}, func(p, r string) { t.Errorf("refused %s: %s", p, r) }, cache)
		if err != nil {
			t.Fatal(err)
		}
		var got, exp []string
		for _, a := range arts {
			got = append(got, fmt.Sprintf("%s %d %s", a.Path, a.Size, a.SHA256))
		}
		for i := 0; i < len(want); i += 2 {
			exp = append(exp, fmt.Sprintf("%s %d %s", want[i], len(want[i+1]), sha(want[i+1])))
		}
		if d := cmp.Diff(exp, got); d != "" {
			t.Fatalf("artifacts (-want +got):\n%s", d)
		}
	}
	settle := func() { time.Sleep(racyWindow + 50*time.Millisecond) }

	// Changed again and again within the racy window: never trusted.
	for _, s := range []string{"one", "two", "six"} {
		write("a.txt", s)
		write("sub/b.txt", s)
		list("a.txt", s, "sub/b.txt", s)
		if len(cache.files)+len(cache.lists) != 0 {
			t.Fatalf("something changed just now was remembered: %+v", cache)
		}
	}
	// Left alone: remembered. A planted hash shows the next listing is
	// the remembered one.
	settle()
	list("a.txt", "six", "sub/b.txt", "six")
	l := cache.lists[dir]
	if l == nil || len(cache.files) != 2 {
		t.Fatalf("listing and hashes of files left alone for %v not remembered: %+v", racyWindow, cache)
	}
	l.artifacts[0].SHA256 = sha("planted")
	if arts, _ := listArtifacts(dir, tproxy.ArtifactLimits{}, nil, cache); arts[0].SHA256 != sha("planted") {
		t.Fatalf("listing not taken from the cache: %+v", arts)
	}
	// A file added in a subdirectory moves only that directory's stamp.
	write("sub/c.txt", "new")
	list("a.txt", "six", "sub/b.txt", "six", "sub/c.txt", "new")
	// Changed in place to the same size: its stamp moved.
	settle()
	list("a.txt", "six", "sub/b.txt", "six", "sub/c.txt", "new")
	f, err := os.OpenFile(filepath.Join(dir, "a.txt"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("ten"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	list("a.txt", "ten", "sub/b.txt", "six", "sub/c.txt", "new")
	// Replaced by another file: a new inode.
	settle()
	list("a.txt", "ten", "sub/b.txt", "six", "sub/c.txt", "new")
	other := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(other, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, filepath.Join(dir, "sub", "b.txt")); err != nil {
		t.Fatal(err)
	}
	list("a.txt", "ten", "sub/b.txt", "old", "sub/c.txt", "new")
	// Removed.
	if err := os.Remove(filepath.Join(dir, "sub", "c.txt")); err != nil {
		t.Fatal(err)
	}
	list("a.txt", "ten", "sub/b.txt", "old")
}

// TestWriteCleanedConfigUsesStamp: once cleaned_config.json's hash is
// remembered, the same config is not even read back, and a driver's edit of
// the same length is still overwritten.
func TestWriteCleanedConfigUsesStamp(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("file stamps are read on Linux only")
	}
	dir := t.TempDir()
	name := filepath.Join(dir, CleanedConfigFile)
	cache := &artifactCache{}
	cfg := map[string]any{"k": "v"}
	want := "{\n  \"k\": \"v\"\n}\n"
	if err := writeCleanedConfig(dir, cfg, cache); err != nil {
		t.Fatal(err)
	}
	time.Sleep(racyWindow + 50*time.Millisecond)
	if _, err := listArtifacts(dir, tproxy.ArtifactLimits{}, nil, cache); err != nil {
		t.Fatal(err)
	}
	if _, ok := cache.files[name]; !ok {
		t.Fatal("cleaned_config.json's hash not remembered")
	}
	// A planted hash shows the file is not read back: its stamp is
	// unchanged, so the remembered hash is taken as its content's.
	other := map[string]any{"k": "w"}
	h := cache.files[name]
	h.sum = sha("{\n  \"k\": \"w\"\n}\n")
	cache.files[name] = h
	if err := writeCleanedConfig(dir, other, cache); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(name); string(b) != want {
		t.Fatalf("file rewritten although its stamp was unchanged: %q", b)
	}
	// A driver's edit of the same length moves the stamp: overwritten.
	edited := []byte(want)
	edited[8] = 'x'
	if err := os.WriteFile(name, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeCleanedConfig(dir, cfg, cache); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(name); string(b) != want {
		t.Errorf("edited file holds %q, want %q", b, want)
	}
}
