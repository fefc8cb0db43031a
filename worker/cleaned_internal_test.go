package worker

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteCleanedConfigRewritesOnlyChanges(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, CleanedConfigFile)
	stat := func() os.FileInfo {
		t.Helper()
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		return fi
	}
	read := func() string {
		t.Helper()
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if err := writeCleanedConfig(dir, map[string]any{"table": "users"}); err != nil {
		t.Fatal(err)
	}
	first := stat()
	// Same config: the file is not touched. Back-date it so that a rewrite,
	// however quick, would show in its modification time.
	past := first.ModTime().Add(-time.Hour)
	if err := os.Chtimes(name, past, past); err != nil {
		t.Fatal(err)
	}
	if err := writeCleanedConfig(dir, map[string]any{"table": "users"}); err != nil {
		t.Fatal(err)
	}
	if got := stat().ModTime(); !got.Equal(past) {
		t.Errorf("same config: file rewritten (mtime %v, want %v)", got, past)
	}
	// A changed config, or a file a driver changed, is rewritten.
	if err := writeCleanedConfig(dir, map[string]any{"table": "orders"}); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "{\n  \"table\": \"orders\"\n}\n"; got != want {
		t.Errorf("changed config: file holds %q, want %q", got, want)
	}
	if err := os.WriteFile(name, []byte("edited by a driver"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeCleanedConfig(dir, map[string]any{"table": "orders"}); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "{\n  \"table\": \"orders\"\n}\n"; got != want {
		t.Errorf("edited file: holds %q, want %q", got, want)
	}
}

func TestWriteCleanedConfigSymlinkOutside(t *testing.T) {
	dir, outside := t.TempDir(), filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(outside, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, CleanedConfigFile)); err != nil {
		t.Fatal(err)
	}
	if err := writeCleanedConfig(dir, map[string]any{"a": 1}); err == nil {
		t.Error("writing through a symlink out of the directory succeeded")
	}
	if b, _ := os.ReadFile(outside); string(b) != "keep" {
		t.Errorf("file outside the directory now holds %q", b)
	}
}
