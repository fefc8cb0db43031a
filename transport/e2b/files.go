package e2b

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// defaultFilesDir is where E2B.Files go when FilesDir is empty.
const defaultFilesDir = "/home/user/inputs"

// inputFile is one local file to put into the sandbox.
type inputFile struct {
	local, remote string
	sum           string
	size          int64
}

// inputFiles resolves E2B.Files before anything is created: every name
// must stay inside FilesDir, every local path must exist, and every
// file's size and sha256 are taken now, so that the check after the
// upload compares with what was meant to be sent.
func (c *client) inputFiles() ([]inputFile, error) {
	if len(c.t.Files) == 0 {
		return nil, nil
	}
	dir := path.Clean(firstNonEmpty(c.t.FilesDir, defaultFilesDir))
	if !path.IsAbs(dir) {
		return nil, fmt.Errorf("e2b: E2B.FilesDir %q is not an absolute path", c.t.FilesDir)
	}
	var out []inputFile
	for name, local := range c.t.Files {
		clean := path.Clean(filepath.ToSlash(name))
		if name == "" || path.IsAbs(clean) || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
			return nil, fmt.Errorf("e2b: E2B.Files: %q is not a path inside FilesDir", name)
		}
		root := path.Join(dir, clean)
		err := filepath.WalkDir(local, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			if !d.Type().IsRegular() {
				return fmt.Errorf("%s is not a regular file", p)
			}
			rel, err := filepath.Rel(local, p)
			if err != nil {
				return err
			}
			sum, size, err := fileSHA256(p)
			if err != nil {
				return err
			}
			out = append(out, inputFile{local: p, remote: path.Join(root, filepath.ToSlash(rel)), sum: sum, size: size})
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("e2b: E2B.Files[%q]: %w", name, err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].remote < out[j].remote })
	return out, nil
}

// putFiles uploads the input files and checks, with one helper command
// for all of them, that each has the size and sha256 it had here. It
// returns the bytes uploaded.
func (e *envd) putFiles(ctx context.Context, files []inputFile) (int64, error) {
	if len(files) == 0 {
		return 0, nil
	}
	var n int64
	// One line per file, in order: its size and its sha256.
	args := []string{"-c", `for f in "$@"; do s=$(stat -c %s "$f") && h=$(sha256sum < "$f") && echo "$s $h" || exit 1; done`, "sh"}
	for _, f := range files {
		if err := e.upload(ctx, f.local, f.remote); err != nil {
			return n, fmt.Errorf("e2b: uploading input file %s: %w", f.remote, err)
		}
		n += f.size
		args = append(args, f.remote)
	}
	r, err := e.run(ctx, "/bin/sh", args...)
	if err != nil {
		return n, fmt.Errorf("e2b: checking the input files: %w", err)
	}
	if !r.status.Success() {
		return n, fmt.Errorf("e2b: checking the input files: %v: %s", r.status, strings.TrimSpace(r.stderr))
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	for i, f := range files {
		var g []string
		if i < len(lines) {
			g = strings.Fields(lines[i])
		}
		switch {
		case len(g) < 2:
			return n, fmt.Errorf("e2b: input file %s could not be checked in the sandbox: %q", f.remote, r.stdout)
		case g[0] != strconv.FormatInt(f.size, 10):
			return n, fmt.Errorf("e2b: input file %s has %s bytes in the sandbox, %d here", f.remote, g[0], f.size)
		case g[1] != f.sum:
			return n, fmt.Errorf("e2b: input file %s has sha256 %s in the sandbox, %s here", f.remote, g[1], f.sum)
		}
	}
	return n, nil
}
