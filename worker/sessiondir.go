package worker

import (
	"os"
)

// Session directories are named tproxy-<session id>-<random> in the
// Worker's WorkDir. On Unix each holds an owner file that its worker keeps
// locked (flock) for as long as the directory is in use, and a sweep
// removes the stale ones (sessiondir_unix.go); elsewhere a directory is
// only created and removed (sessiondir_other.go).
const dirPrefix = "tproxy-"

// createDir sweeps stale session directories where the platform can tell
// them (once per Worker), then creates the session's directory and locks
// it where the platform can.
func (s *server) createDir(sessionID string) (string, error) {
	root := s.w.workDir()
	s.w.sweepOnce.Do(func() { sweep(root, s.log) })
	dir, err := os.MkdirTemp(root, dirPrefix+sessionID+"-")
	if err != nil {
		return "", err
	}
	lock, err := lockDir(dir)
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
