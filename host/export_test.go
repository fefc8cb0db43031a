package host

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"

	"github.com/tproxy/tproxy/logsink"
)

// FullDisk models a disk with no free space for the files of status.json
// while Full is set: a write that would make a file longer than it was
// when opened fails with ENOSPC, as it does on a full disk; writes over
// the space a file already has succeed. It returns a func that restores
// the real file system.
type FullDisk struct{ Full atomic.Bool }

// SimulateFullDisk installs d for status.json's files.
func SimulateFullDisk(d *FullDisk) (restore func()) {
	old := openFile
	openFile = func(name string, flag int, perm os.FileMode) (statusFile, error) {
		f, err := os.OpenFile(name, flag, perm)
		if err != nil {
			return nil, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		return &fullFile{File: f, d: d, room: fi.Size()}, nil
	}
	return func() { openFile = old }
}

type fullFile struct {
	*os.File
	d    *FullDisk
	room int64 // the bytes the file had when opened
}

func (f *fullFile) WriteAt(b []byte, off int64) (int, error) {
	if f.d.Full.Load() && off+int64(len(b)) > f.room {
		n := 0
		if off < f.room {
			n, _ = f.File.WriteAt(b[:f.room-off], off)
		}
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.WriteAt(b, off)
}

// LogsOnFullDevice makes the session's events.jsonl and metrics.jsonl
// /dev/full: every write to them fails with ENOSPC.
func LogsOnFullDevice() (restore func()) {
	old := openLogs
	openLogs = func(dir, sessionID string, opts ...logsink.Option) (*logsink.Files, error) {
		for _, f := range []string{logsink.EventsFile, logsink.MetricsFile} {
			if err := os.Symlink("/dev/full", filepath.Join(dir, f)); err != nil {
				return nil, err
			}
		}
		return old(dir, sessionID, opts...)
	}
	return func() { openLogs = old }
}

// FailArtifactWrites makes every write of an artifact's bytes fail with
// err.
func FailArtifactWrites(err error) (restore func()) {
	old := writeArtifact
	writeArtifact = func(*os.File, []byte) (int, error) { return 0, err }
	return func() { writeArtifact = old }
}
