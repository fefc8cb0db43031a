package mask_test

import (
	"encoding/base64"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/mask"
)

// FuzzMaskerString: once masked, a text holds none of the secrets (that do
// not themselves contain the mask's characters).
func FuzzMaskerString(f *testing.F) {
	f.Add("hunter22", "abcd", "login hunter22 abcdabcd hunter2abcd")
	f.Add("aaaa", "aaaaa", "aaaaaaaaaaa")
	f.Add("xyzw", "zwxy", "xyzwxyzwxy")
	f.Fuzz(func(t *testing.T, s1, s2, text string) {
		m, err := mask.NewMasker(tproxy.Secrets{})
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

// FuzzMaskerForms: for any secret, each encoding of a text holding it
// (textEncodings, and base64 at each of the 3 offsets) is masked: neither
// the secret nor its form under that encoding survives. Masked in pieces
// split anywhere, the text comes out as masked whole.
func FuzzMaskerForms(f *testing.F) {
	for i, s := range trickySecrets {
		f.Add(s, "login failed: ", " (retrying)", uint64(i))
	}
	f.Add("aaaa", "aaa", "aaaaa", uint64(7))
	f.Add(`\"\\`, `\`, `"`, uint64(3))
	f.Fuzz(func(t *testing.T, secret, prefix, suffix string, seed uint64) {
		if len(secret) < tproxy.MinSecretLen || len(secret) > 64 || len(prefix)+len(suffix) > 256 ||
			!utf8.ValidString(secret) || !utf8.ValidString(prefix) || !utf8.ValidString(suffix) {
			return
		}
		m, err := mask.NewMasker(tproxy.Secrets{})
		if err != nil {
			t.Fatal(err)
		}
		m.AddValues(secret)
		checkForms(t, m, secret, prefix, suffix)

		text := prefix + secret + suffix + " " + strconv.Quote(prefix+secret) + " " + base64.StdEncoding.EncodeToString([]byte(text3(prefix, secret)))
		whole := m.String(text)
		rng := rand.New(rand.NewPCG(seed, seed>>32))
		var out, pending []byte
		for rest := []byte(text); len(rest) > 0; {
			k := 1 + rng.IntN(len(rest))
			pending = append(pending, rest[:k]...)
			rest = rest[k:]
			masked, n := m.MaskPrefix(pending, false)
			out = append(out, masked...)
			pending = append(pending[:0], pending[n:]...)
		}
		masked, _ := m.MaskPrefix(pending, true)
		if out = append(out, masked...); string(out) != whole {
			t.Fatalf("masked in pieces %q, masked whole %q", out, whole)
		}
	})
}

func text3(prefix, secret string) string { return prefix[:len(prefix)%3] + secret }
