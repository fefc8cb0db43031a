package worker

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestHashCache: a file's hash is remembered once the file has been left
// alone for racyWindow, and recomputed whenever its content changed, even
// to the same size, and however soon after it was described.
func TestHashCache(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("file stamps are read on Linux only; elsewhere nothing is cached")
	}
	dir := t.TempDir()
	name := filepath.Join(dir, "a.txt")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(name, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hashes := hashCache{}
	list := func(want string) {
		t.Helper()
		arts, err := listArtifacts(dir, func(p, r string) { t.Errorf("refused %s: %s", p, r) }, hashes)
		if err != nil {
			t.Fatal(err)
		}
		if len(arts) != 1 || arts[0].SHA256 != sha(want) || arts[0].Size != int64(len(want)) {
			t.Fatalf("artifacts %+v, want a.txt holding %q", arts, want)
		}
	}

	// Changed again and again within the racy window: never trusted.
	for _, s := range []string{"one", "two", "six"} {
		write(s)
		list(s)
		if _, ok := hashes[name]; ok {
			t.Fatalf("hash of a file changed just now was remembered")
		}
	}
	// Left alone: remembered, and then found by its stamp.
	time.Sleep(racyWindow + 50*time.Millisecond)
	list("six")
	if h, ok := hashes[name]; !ok || h.sum != sha("six") {
		t.Fatalf("hash of a file left alone for %v not remembered: %+v", racyWindow, hashes)
	}
	// Planting a wrong hash shows that the next listing uses the cache.
	h := hashes[name]
	h.sum = sha("planted")
	hashes[name] = h
	arts, err := listArtifacts(dir, nil, hashes)
	if err != nil || len(arts) != 1 || arts[0].SHA256 != sha("planted") {
		t.Fatalf("listing did not use the remembered hash: %+v, %v", arts, err)
	}
	// Changed in place to the same size: the stamp moved, the hash is new.
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("ten"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	list("ten")
	// Replaced by another file with the same content and times: a new
	// inode, so hashed again.
	other := filepath.Join(t.TempDir(), "b")
	if err := os.WriteFile(other, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, name); err != nil {
		t.Fatal(err)
	}
	list("new")
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
	hashes := hashCache{}
	cfg := map[string]any{"k": "v"}
	want := "{\n  \"k\": \"v\"\n}\n"
	if err := writeCleanedConfig(dir, cfg, hashes); err != nil {
		t.Fatal(err)
	}
	time.Sleep(racyWindow + 50*time.Millisecond)
	if _, err := listArtifacts(dir, nil, hashes); err != nil {
		t.Fatal(err)
	}
	if _, ok := hashes[name]; !ok {
		t.Fatal("cleaned_config.json's hash not remembered")
	}
	// A planted hash shows the file is not read back: its stamp is
	// unchanged, so the remembered hash is taken as its content's.
	other := map[string]any{"k": "w"}
	h := hashes[name]
	h.sum = sha("{\n  \"k\": \"w\"\n}\n")
	hashes[name] = h
	if err := writeCleanedConfig(dir, other, hashes); err != nil {
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
	if err := writeCleanedConfig(dir, cfg, hashes); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(name); string(b) != want {
		t.Errorf("edited file holds %q, want %q", b, want)
	}
}
