package worker

import (
	"io/fs"
	"time"
)

// hashCache remembers the sha256 of the artifact files a session has
// described, by file identity, so that a step run again does not re-read
// files it left alone: on this machine's ext4, describing a one-file
// artifact directory cost ~60 µs of worker CPU per step, mostly opening
// and reading the file. A file's stamp (device, inode, size, modification
// and change times) changes whenever its content does, except within the
// kernel's timestamp granularity (a coarse clock tick): like Git's racy
// index entries, a file changed within racyWindow of being stamped is not
// remembered, and is hashed again next time.
//
// It is used by the executor goroutine only.
type hashCache map[string]cachedHash // by absolute path

type cachedHash struct {
	stamp fileStamp
	sum   string
}

// fileStamp identifies one version of a file's content.
type fileStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // unix nanoseconds
}

// racyWindow is how long after a file's last change its hash is not
// trusted to a stamp; far above any kernel's timestamp granularity.
const racyWindow = 100 * time.Millisecond

// lookup returns the remembered hash of the file at path, whose current
// stat is fi, if its stamp is unchanged.
func (c hashCache) lookup(path string, fi fs.FileInfo) (string, bool) {
	st, ok := stampOf(fi)
	if !ok {
		return "", false
	}
	h, ok := c[path]
	if !ok || h.stamp != st {
		return "", false
	}
	return h.sum, true
}

// store remembers sum for the file at path, stat'd as fi no earlier than
// before, unless it changed too recently for its stamp to be trusted.
func (c hashCache) store(path string, fi fs.FileInfo, sum string, before time.Time) {
	st, ok := stampOf(fi)
	if !ok {
		return
	}
	limit := before.Add(-racyWindow).UnixNano()
	if st.ctime >= limit || st.mtime >= limit {
		delete(c, path)
		return
	}
	c[path] = cachedHash{stamp: st, sum: sum}
}
