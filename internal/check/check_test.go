package check_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/tproxy/tproxy/internal/check"
)

// FuzzArtifactPath: a path the check admits stays inside the
// directory it is joined to.
func FuzzArtifactPath(f *testing.F) {
	for _, p := range []string{"a.txt", "sub/b.bin", "../x", "/etc/passwd", "a/../../b", "a//b", "./a", "a/.", `a\..\b`, "..", "...", "a/..b"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if check.ArtifactPath(p) != nil {
			return
		}
		if !filepath.IsLocal(p) {
			t.Fatalf("ArtifactPath admitted %q, which is not local", p)
		}
		root := "/srv/session/artifacts/step"
		joined := filepath.Join(root, p)
		if !strings.HasPrefix(joined, root+string(filepath.Separator)) {
			t.Fatalf("ArtifactPath admitted %q, which joins to %q", p, joined)
		}
	})
}
