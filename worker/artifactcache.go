package worker

import (
	"io/fs"
	"os"
	"slices"
	"time"

	"github.com/tproxy/tproxy"
)

// artifactCache remembers what a session learnt describing its artifact
// directories, by file stamp (device, inode, size, modification and change
// times), so that a step run again does not re-read what it left alone: on
// this machine's ext4, listing a one-file artifact directory cost ~60 µs
// of worker CPU per step, mostly opening, reading and listing. It keeps
// each file's sha256, and each directory's last listing with the stamps of
// everything walked for it: while none of those stamps moved (adding,
// removing or renaming an entry moves its directory's), the listing
// stands, checked with one stat per entry.
//
// A stamp changes whenever the content does, except within the kernel's
// timestamp granularity (a coarse clock tick). Like Git's racy index
// entries, nothing changed within racyWindow of being stamped is
// remembered: it is looked at again next time.
//
// The zero value is ready to use. It is used by the executor goroutine
// only.
type artifactCache struct {
	files map[string]cachedHash     // by absolute path
	lists map[string]*cachedListing // by absolute directory
}

type cachedHash struct {
	stamp fileStamp
	sum   string
}

type cachedListing struct {
	walked    []stamped // every directory and file the listing walked
	artifacts []tproxy.Artifact
}

// stamped is a path a listing walked and its stamp then: a directory's own
// (lstat), a file's target's (stat).
type stamped struct {
	path  string
	dir   bool
	stamp fileStamp
}

// fileStamp identifies one version of a file's content, or of a
// directory's entries.
type fileStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // unix nanoseconds
}

// racyWindow is how long after a file's last change its stamp is not
// trusted; far above any kernel's timestamp granularity.
const racyWindow = 100 * time.Millisecond

// trusted reports whether st was last changed long enough before a stat
// taken no earlier than before to stand for its content.
func trusted(st fileStamp, before time.Time) bool {
	limit := before.Add(-racyWindow).UnixNano()
	return st.ctime < limit && st.mtime < limit
}

// hash returns the remembered hash of the file at path, whose current stat
// is fi, if its stamp is unchanged.
func (c *artifactCache) hash(path string, fi fs.FileInfo) (string, bool) {
	st, ok := stampOf(fi)
	if !ok || c == nil {
		return "", false
	}
	h, ok := c.files[path]
	if !ok || h.stamp != st {
		return "", false
	}
	return h.sum, true
}

// rememberHash remembers sum for the file at path, stat'd as fi no
// earlier than before, if its stamp can be trusted.
func (c *artifactCache) rememberHash(path string, fi fs.FileInfo, sum string, before time.Time) {
	st, ok := stampOf(fi)
	if !ok || c == nil {
		return
	}
	if !trusted(st, before) {
		delete(c.files, path)
		return
	}
	if c.files == nil {
		c.files = map[string]cachedHash{}
	}
	c.files[path] = cachedHash{stamp: st, sum: sum}
}

// listing returns a copy of dir's remembered listing if nothing it walked
// has changed stamp.
func (c *artifactCache) listing(dir string) ([]tproxy.Artifact, bool) {
	if c == nil {
		return nil, false
	}
	l := c.lists[dir]
	if l == nil {
		return nil, false
	}
	for _, w := range l.walked {
		var (
			fi  fs.FileInfo
			err error
		)
		if w.dir {
			fi, err = os.Lstat(w.path)
		} else {
			fi, err = os.Stat(w.path)
		}
		if err != nil {
			return nil, false
		}
		if st, ok := stampOf(fi); !ok || st != w.stamp {
			return nil, false
		}
	}
	return slices.Clone(l.artifacts), true
}

// rememberListing remembers dir's listing, made by walking walked from no
// earlier than before, if every stamp can be trusted; else it forgets any
// listing of dir.
func (c *artifactCache) rememberListing(dir string, walked []stamped, arts []tproxy.Artifact, before time.Time) {
	if c == nil {
		return
	}
	delete(c.lists, dir)
	for _, w := range walked {
		if !trusted(w.stamp, before) {
			return
		}
	}
	if c.lists == nil {
		c.lists = map[string]*cachedListing{}
	}
	c.lists[dir] = &cachedListing{walked: walked, artifacts: slices.Clone(arts)}
}
