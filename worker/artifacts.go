package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/check"
)

// CleanedConfigFile is the artifact the runtime writes for every step: the
// step's config with its secrets masked.
const CleanedConfigFile = "cleaned_config.json"

// artifactDir is where step id's artifacts live in session directory dir.
func artifactDir(dir, stepID string) string { return filepath.Join(dir, "artifacts", stepID) }

// writeCleanedConfig writes the masked config as the step's first artifact,
// creating dir if it does not exist. A file already holding exactly those
// bytes (the same step run again) is left as it is: a read costs far less
// than a truncating rewrite (docs/performance.md).
func writeCleanedConfig(dir string, cfg map[string]any) error {
	if cfg == nil {
		cfg = map[string]any{}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	// Through os.Root: a symlink a driver left in the directory cannot
	// redirect the write outside it.
	root, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(dir, 0o755); err == nil {
			root, err = os.OpenRoot(dir)
		}
	}
	if err != nil {
		return fmt.Errorf("creating the artifact directory: %w", err)
	}
	defer root.Close()
	if old, err := root.ReadFile(CleanedConfigFile); err == nil && bytes.Equal(old, b) {
		return nil
	}
	return root.WriteFile(CleanedConfigFile, b, 0o644)
}

// errTooBig is describe's error for a file over the host's size cap.
var errTooBig = errors.New("over the host's cap")

// maxCleanedConfigBytes is the size cap of cleaned_config.json when the
// host sends caps (docs/protocol.md section 10): the host takes it up to
// that size whatever its per-file cap, since it is the step's config.
const maxCleanedConfigBytes = 1 << 20

// listArtifacts describes the regular files under dir, sorted by path. A
// symlink is listed only when it resolves to a regular file inside dir;
// one that points elsewhere is refused: refuse is called with its path,
// the reason and 1 (the files the refusal stands for), and it is left out.
//
// lim are the host's caps (prepare's artifact_limits; zero: none), which
// keep a driver's output from costing the worker what the host would
// refuse anyway: a file over MaxFileBytes is refused without being hashed,
// and the listing holds at most MaxFiles files, the first in path order,
// cleaned_config.json always among them (up to maxCleanedConfigBytes,
// whatever MaxFileBytes); one refusal stands for the files left out.
func listArtifacts(dir string, lim tproxy.ArtifactLimits, refuse func(path, reason string, files int64)) ([]tproxy.Artifact, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var (
		out []tproxy.Artifact
		// slots are how many files besides cleaned_config.json the
		// listing may still take; leftOut, how many it did not.
		slots   = lim.MaxFiles
		leftOut int64
	)
	if slots > 0 {
		if fi, err := root.Lstat(CleanedConfigFile); err == nil && fi.Mode().IsRegular() {
			slots--
		}
	}
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		cleaned := p == CleanedConfigFile
		switch {
		case d.IsDir():
			return nil
		case lim.MaxFiles > 0 && !cleaned && slots <= 0:
			// Counted, not looked at: a directory of a million files
			// costs a walk, not a million hashes.
			leftOut++
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			fi, err := root.Stat(p)
			if err != nil {
				refuse(p, fmt.Sprintf("symlink does not resolve inside the artifact directory: %v", err), 1)
				return nil
			}
			if !fi.Mode().IsRegular() {
				refuse(p, "symlink to something other than a regular file", 1)
				return nil
			}
		case !d.Type().IsRegular():
			refuse(p, "not a regular file", 1)
			return nil
		}
		maxBytes := lim.MaxFileBytes
		if cleaned && maxBytes > 0 {
			maxBytes = maxCleanedConfigBytes
		}
		a, err := describe(root, p, maxBytes)
		if errors.Is(err, errTooBig) {
			refuse(p, fmt.Sprintf("%d bytes is over the host's cap of %d bytes per file (artifact_limits.max_file_bytes): not listed", a.Size, maxBytes), 1)
			return nil
		}
		if err != nil {
			return err
		}
		out = append(out, a)
		if !cleaned {
			slots--
		}
		return nil
	})
	if leftOut > 0 {
		refuse(".", fmt.Sprintf("%d more files were left out of the listing: the host takes at most %d files per step (artifact_limits.max_files)", leftOut, lim.MaxFiles), leftOut)
	}
	slices.SortFunc(out, func(a, b tproxy.Artifact) int { return strings.Compare(a.Path, b.Path) })
	return out, err
}

// describe hashes file p of root. A file over maxBytes (when > 0) is not
// hashed: the error is errTooBig, with the size in the Artifact.
func describe(root *os.Root, p string, maxBytes int64) (tproxy.Artifact, error) {
	f, err := root.Open(p)
	if err != nil {
		return tproxy.Artifact{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return tproxy.Artifact{}, err
	}
	if maxBytes > 0 && fi.Size() > maxBytes {
		return tproxy.Artifact{Path: p, Size: fi.Size()}, errTooBig
	}
	h := sha256.New()
	var r io.Reader = f
	if maxBytes > 0 {
		r = io.LimitReader(f, maxBytes+1) // a file growing while read
	}
	n, err := io.Copy(h, r)
	if err != nil {
		return tproxy.Artifact{}, fmt.Errorf("hashing artifact %s: %w", p, err)
	}
	if maxBytes > 0 && n > maxBytes {
		return tproxy.Artifact{Path: p, Size: n}, errTooBig
	}
	return tproxy.Artifact{Path: p, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// fetchArtifact serves one chunk of an artifact of a step of the session.
func (s *server) fetchArtifact(ctx context.Context, raw json.RawMessage) (*tproxy.FetchArtifactResult, error) {
	ss := &s.sess
	if !ss.prepared {
		return nil, s.notPrepared(tproxy.MethodFetchArtifact)
	}
	var p tproxy.FetchArtifactParams
	if err := decodeParams(tproxy.MethodFetchArtifact, raw, &p, "step_id", "path", "offset", "length"); err != nil {
		return nil, err
	}
	if err := check.ID("step id", p.StepID); err != nil {
		return nil, invalidParams(tproxy.MethodFetchArtifact, err)
	}
	if err := check.ArtifactPath(p.Path); err != nil {
		return nil, invalidParams(tproxy.MethodFetchArtifact, err)
	}
	if p.Offset < 0 || p.Length < 0 {
		return nil, invalidParams(tproxy.MethodFetchArtifact, fmt.Errorf("negative offset %d or length %d", p.Offset, p.Length))
	}
	n := p.Length
	if n == 0 || n > tproxy.DefaultArtifactChunk {
		n = tproxy.DefaultArtifactChunk
	}
	root, err := os.OpenRoot(artifactDir(ss.dir, p.StepID))
	if err != nil {
		return nil, &jsonrpc2.Error{Code: tproxy.CodeInvalidParams,
			Message: fmt.Sprintf("fetch_artifact: step %q has no artifacts in session %q", p.StepID, ss.id)}
	}
	defer root.Close()
	f, err := root.Open(p.Path)
	if err != nil {
		// os.Root refuses a symlink out of the directory here.
		return nil, &jsonrpc2.Error{Code: tproxy.CodeInvalidParams,
			Message: fmt.Sprintf("fetch_artifact: step %q: %v", p.StepID, err)}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		return nil, &jsonrpc2.Error{Code: tproxy.CodeInvalidParams,
			Message: fmt.Sprintf("fetch_artifact: step %q: %s is not a regular file", p.StepID, p.Path)}
	}
	buf := make([]byte, n)
	m, err := f.ReadAt(buf, p.Offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, &jsonrpc2.Error{Code: tproxy.CodeInternalError,
			Message: fmt.Sprintf("fetch_artifact: step %q: reading %s: %v", p.StepID, p.Path, err)}
	}
	// eof says the chunk reaches the end: the host need not ask for an
	// empty one to learn it.
	eof := errors.Is(err, io.EOF) || m < n || fi != nil && p.Offset+int64(m) >= fi.Size()
	return &tproxy.FetchArtifactResult{Data: buf[:m], EOF: eof}, nil
}
