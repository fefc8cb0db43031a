//go:build !linux

package worker

import "io/fs"

// stampOf has no change time to go on outside Linux: nothing is cached.
func stampOf(fs.FileInfo) (fileStamp, bool) { return fileStamp{}, false }
