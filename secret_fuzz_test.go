package tproxy_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/tproxy/tproxy"
)

// FuzzMaskerString: once masked, a text holds none of the secrets (that do
// not themselves contain the mask's characters).
func FuzzMaskerString(f *testing.F) {
	f.Add("hunter22", "abcd", "login hunter22 abcdabcd hunter2abcd")
	f.Add("aaaa", "aaaaa", "aaaaaaaaaaa")
	f.Add("xyzw", "zwxy", "xyzwxyzwxy")
	f.Fuzz(func(t *testing.T, s1, s2, text string) {
		m, err := tproxy.NewMasker(tproxy.Secrets{})
		if err != nil {
			t.Fatal(err)
		}
		m.AddValues(s1, s2)
		out := m.String(text)
		for _, s := range []string{s1, s2} {
			if len(s) < tproxy.MinSecretLen || strings.ContainsAny(s, "*MASKED") {
				continue
			}
			if strings.Contains(out, s) {
				t.Fatalf("String(%q) = %q still holds secret %q", text, out, s)
			}
		}
	})
}

// FuzzCheckArtifactPath: a path the check admits stays inside the
// directory it is joined to.
func FuzzCheckArtifactPath(f *testing.F) {
	for _, p := range []string{"a.txt", "sub/b.bin", "../x", "/etc/passwd", "a/../../b", "a//b", "./a", "a/.", `a\..\b`, "..", "...", "a/..b"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if tproxy.CheckArtifactPath(p) != nil {
			return
		}
		if !filepath.IsLocal(p) {
			t.Fatalf("CheckArtifactPath admitted %q, which is not local", p)
		}
		root := "/srv/session/artifacts/step"
		joined := filepath.Join(root, p)
		if !strings.HasPrefix(joined, root+string(filepath.Separator)) {
			t.Fatalf("CheckArtifactPath admitted %q, which joins to %q", p, joined)
		}
	})
}
