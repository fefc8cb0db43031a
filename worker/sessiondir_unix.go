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

// On Unix a session directory holds an owner file that its worker keeps
// locked (flock) for as long as the directory is in use: the kernel drops
// the lock when the process ends, however it ends, so a directory whose
// lock can be taken has no live owner.
const (
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

// sweep removes root's stale session directories, at most once an hour
// per root.
func sweep(root string, log *slog.Logger) {
	if now := time.Now(); sweepDue(root, now) {
		sweepStale(root, now, log)
	}
}

// lockDir creates dir's owner file and locks it; closing the file
// unlocks it.
func lockDir(dir string) (*os.File, error) {
	lock, err := os.OpenFile(filepath.Join(dir, ownerFile), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
		// For a person looking at the directory; the lock is what counts.
		_, err = fmt.Fprintf(lock, "pid %d\n", os.Getpid())
	}
	if err != nil {
		lock.Close()
		return nil, err
	}
	return lock, nil
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
