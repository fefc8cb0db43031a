//go:build unix

package worker

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nopConn is a connection nothing is read from or written to.
type nopConn struct{}

func (nopConn) Read([]byte) (int, error)    { return 0, io.EOF }
func (nopConn) Write(p []byte) (int, error) { return len(p), nil }
func (nopConn) Close() error                { return nil }

func testServer(t *testing.T) *server {
	w := New("t", "1")
	w.WorkDir = t.TempDir()
	w.Logger = slog.New(slog.DiscardHandler)
	return newServer(w, nopConn{})
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// TestSweepStaleRemovesOnlyDeadOldDirs: the sweep removes a session
// directory only when its owner file is older than staleAge and nobody
// holds its lock.
func TestSweepStaleRemovesOnlyDeadOldDirs(t *testing.T) {
	now := time.Now()
	old, recent := now.Add(-staleAge-time.Hour), now.Add(-time.Hour)
	tests := []struct {
		name    string
		dir     string
		owner   string // "file", "symlink" or "" (none)
		mtime   time.Time
		locked  bool
		removed bool
	}{
		{"old, owner gone", "tproxy-a-1", "file", old, false, true},
		{"old, owner alive", "tproxy-b-1", "file", old, true, false},
		{"recent, owner gone", "tproxy-c-1", "file", recent, false, false},
		{"no owner file", "tproxy-d-1", "", old, false, false},
		{"owner file is a symlink", "tproxy-e-1", "symlink", old, false, false},
		{"not a session directory", "other-f-1", "file", old, false, false},
	}
	root := t.TempDir()
	for _, tt := range tests {
		dir := filepath.Join(root, tt.dir)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o644)
		owner := filepath.Join(dir, ownerFile)
		switch tt.owner {
		case "file":
			if err := os.WriteFile(owner, []byte("pid 1\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		case "symlink":
			target := filepath.Join(root, tt.dir+"-target")
			os.WriteFile(target, nil, 0o600)
			os.Chtimes(target, tt.mtime, tt.mtime)
			if err := os.Symlink(target, owner); err != nil {
				t.Fatal(err)
			}
		}
		if tt.owner == "file" {
			os.Chtimes(owner, tt.mtime, tt.mtime)
		}
		if tt.locked { // a live owner: this process, on another open file
			f, err := os.Open(owner)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
				t.Fatal(err)
			}
		}
	}
	sweepStale(root, now, slog.New(slog.DiscardHandler))
	for _, tt := range tests {
		if got := !exists(filepath.Join(root, tt.dir)); got != tt.removed {
			t.Errorf("%s: removed = %v, want %v", tt.name, got, tt.removed)
		}
	}
}

// TestSessionDirIsLockedAndSweptOnce: a session directory's owner file is
// locked while it is in use, so no sweep takes it; the first directory a
// Worker creates sweeps the stale ones first.
func TestSessionDirIsLockedAndSweptOnce(t *testing.T) {
	s := testServer(t)
	stale := filepath.Join(s.w.WorkDir, "tproxy-dead-1")
	os.Mkdir(stale, 0o755)
	os.WriteFile(filepath.Join(stale, ownerFile), nil, 0o600)
	long := time.Now().Add(-2 * staleAge)
	os.Chtimes(filepath.Join(stale, ownerFile), long, long)

	dir, err := s.createDir("live")
	if err != nil {
		t.Fatal(err)
	}
	if exists(stale) {
		t.Error("the stale directory survived the first prepare")
	}
	// Even old, a directory in use is not taken.
	os.Chtimes(filepath.Join(dir, ownerFile), long, long)
	sweepStale(s.w.WorkDir, time.Now(), s.log)
	if !exists(dir) {
		t.Fatal("the sweep removed a live session's directory")
	}
	s.removeSessionDir()
	if exists(dir) {
		t.Error("removeSessionDir left the directory")
	}
}

// TestSweepDueAtMostHourly: a WorkDir is swept when it never was, or
// sweepEvery after it last was.
func TestSweepDueAtMostHourly(t *testing.T) {
	root := t.TempDir()
	now := time.Now()
	steps := []struct {
		at   time.Time
		want bool
	}{
		{now, true},                   // never swept
		{now.Add(time.Minute), false}, // swept a minute ago
		{now.Add(sweepEvery - time.Second), false},
		{now.Add(sweepEvery), true},
		{now.Add(sweepEvery + time.Second), false},
	}
	for i, st := range steps {
		if got := sweepDue(root, st.at); got != st.want {
			t.Errorf("step %d (+%v): sweepDue = %v, want %v", i, st.at.Sub(now), got, st.want)
		}
	}
}

// TestRemoveDirOnPanic: a panic in one of the runtime's goroutines removes
// the session directory, then goes on.
func TestRemoveDirOnPanic(t *testing.T) {
	s := testServer(t)
	dir, err := s.createDir("p")
	if err != nil {
		t.Fatal(err)
	}
	var got any
	func() {
		defer func() { got = recover() }()
		defer s.removeDirOnPanic()
		panic("runtime bug")
	}()
	if got != "runtime bug" {
		t.Errorf("the panic became %v", got)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the session directory survived the panic: %v", err)
	}
}
