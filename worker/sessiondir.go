//go:build unix

package worker

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Session directories are named tproxy-<session id>-<random> in the
// Worker's WorkDir. Each holds an owner file that its worker keeps locked
// (flock) for as long as the directory is in use: the kernel drops the
// lock when the process ends, however it ends, so a directory whose lock
// can be taken has no live owner.
const (
	dirPrefix   = "tproxy-"
	ownerFile   = ".tproxy-owner"
	sweepMarker = ".tproxy-swept" // in WorkDir: when it was last swept
)

// sweepEvery spaces the sweeps of a WorkDir: listing a busy temporary
// directory costs about a millisecond, and stale directories appear only
// when workers are killed outright.
const sweepEvery = time.Hour

// staleAge is how old a session directory without a live owner must be
// before the next session's prepare removes it: a worker killed by
// SIGKILL, or by a crash outside the runtime, cannot remove its own. The
// age keeps the sweep away from a directory being set up (its owner file
// exists a moment before it is locked) and from a filesystem whose locks
// are not shared with the process that holds them (some network
// filesystems).
const staleAge = 24 * time.Hour

// createDir sweeps stale session directories (once per Worker, at most
// once an hour per WorkDir), then creates the session's directory and
// locks its owner file.
func (s *server) createDir(sessionID string) (string, error) {
	root := s.w.workDir()
	s.w.sweepOnce.Do(func() {
		if now := time.Now(); sweepDue(root, now) {
			sweepStale(root, now, s.log)
		}
	})
	dir, err := os.MkdirTemp(root, dirPrefix+sessionID+"-")
	if err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ownerFile), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		if err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
			// For a person looking at the directory; the lock is what counts.
			_, err = fmt.Fprintf(lock, "pid %d\n", os.Getpid())
		}
		if err != nil {
			lock.Close()
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	s.mu.Lock()
	s.dir, s.dirLock = dir, lock
	s.mu.Unlock()
	return dir, nil
}

// removeSessionDir removes the session's directory and forgets it,
// session state included. Only the executor calls it, or shut once the
// executor has ended: the session is the executor's.
func (s *server) removeSessionDir() {
	s.sess.removeDir(s.log)
	s.releaseDir(true) // nothing left to remove, normally; unlocks
}

// removeDirOf removes the session's directory without touching the
// session, which a stuck or panicking executor may still hold.
func (s *server) removeDirOf() { s.releaseDir(true) }

// releaseDir forgets the session's directory, removing it first if remove
// is set, and unlocks its owner file (once removed: until then, no sweep
// may take it).
func (s *server) releaseDir(remove bool) {
	s.mu.Lock()
	dir, lock := s.dir, s.dirLock
	s.dir, s.dirLock = "", nil
	s.mu.Unlock()
	if remove && dir != "" {
		if err := os.RemoveAll(dir); err != nil {
			s.log.Warn("tproxy/worker: removing the session directory failed", "dir", dir, "err", err)
		}
	}
	if lock != nil {
		lock.Close()
	}
}

// removeDirOnPanic, deferred by the runtime's goroutines, removes the
// session's directory when one of them panics, then panics on: the
// process dies of it, its directory does not outlive it.
func (s *server) removeDirOnPanic() {
	if p := recover(); p != nil {
		s.removeDirOf()
		panic(p)
	}
}

// sweepDue reports whether root was last swept sweepEvery ago or more (or
// never), and if so marks it swept now. Two workers may both sweep;
// removals are safe against that (removeIfOwnerGone).
func sweepDue(root string, now time.Time) bool {
	marker := filepath.Join(root, sweepMarker)
	if fi, err := os.Stat(marker); err == nil {
		// A marker from the future (a clock set back) does not count.
		if age := now.Sub(fi.ModTime()); age >= 0 && age < sweepEvery {
			return false
		}
	}
	if f, err := os.OpenFile(marker, os.O_WRONLY|os.O_CREATE, 0o644); err == nil {
		f.Close()
	}
	os.Chtimes(marker, now, now) // if it fails (another user's), sweep every time
	return true
}

// sweepStale removes the session directories under root whose owner is
// gone and whose owner file is older than staleAge. A directory with no
// owner file is left alone: it is not one this runtime made, or it is
// being made.
func sweepStale(root string, now time.Time, log *slog.Logger) {
	d, err := os.Open(root)
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	for _, n := range names {
		if !strings.HasPrefix(n, dirPrefix) {
			continue
		}
		dir := filepath.Join(root, n)
		fi, err := os.Lstat(filepath.Join(dir, ownerFile))
		if err != nil || !fi.Mode().IsRegular() || now.Sub(fi.ModTime()) < staleAge {
			continue
		}
		if removeIfOwnerGone(dir) {
			log.Info("tproxy/worker: removed a stale session directory", "dir", dir,
				"age", now.Sub(fi.ModTime()).Round(time.Second).String())
		}
	}
}

// removeIfOwnerGone removes dir if its owner file's lock can be taken,
// holding the lock while it does.
func removeIfOwnerGone(dir string) bool {
	f, err := os.OpenFile(filepath.Join(dir, ownerFile), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return false // a live owner, or a lock this filesystem cannot take
	}
	return os.RemoveAll(dir) == nil
}
