package mask

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestOverlapMatchesBruteForce: overlap, which Excerpt uses to find a
// secret cut at either end, agrees with the obvious quadratic search.
func TestOverlapMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	word := func() string {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = "ab"[rng.IntN(2)]
		}
		return string(b)
	}
	for range 20000 {
		p, text := word(), word()
		want := 0
		for k := min(len(p), len(text)); k > 0; k-- {
			if p[:k] == text[len(text)-k:] {
				want = k
				break
			}
		}
		if got := overlap(p, text); got != want {
			t.Fatalf("overlap(%q, %q) = %d, want %d", p, text, got, want)
		}
	}
}

// TestJSONEscapeMatchesEncodingJSON: the JSON forms a Masker looks for
// are the ones encoding/json writes, with and without HTML escaping.
func TestJSONEscapeMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{
		"plain", `q"b\s/`, "\x00\x01\x08\x0c\n\r\t\x1b\x7f", "<a href='x'>&amp;</a>", "\u2028\u2029",
		"é世🎉\u00a0\u0085", "bad \xff utf8 \xe2\x82", "\ufffd valid replacement",
	} {
		b, _ := json.Marshal(s)
		if got, want := jsonEscape(s, jsonGo), string(b[1:len(b)-1]); got != want {
			t.Errorf("jsonEscape(%q, jsonGo) = %q, encoding/json writes %q", s, got, want)
		}
		var w strings.Builder
		e := json.NewEncoder(&w)
		e.SetEscapeHTML(false)
		e.Encode(s)
		want := strings.TrimSuffix(w.String(), "\n")
		if got, want := jsonEscape(s, jsonNoHTML), want[1:len(want)-1]; got != want {
			t.Errorf("jsonEscape(%q, jsonNoHTML) = %q, json.Encoder without HTML escaping writes %q", s, got, want)
		}
	}
}

// TestPyEscapeMatchesCPython: the Python forms, against what CPython 3
// prints for repr and ascii of the same text.
func TestPyEscapeMatchesCPython(t *testing.T) {
	s := "ab'c\"d\\e\x01\x7f\u0085\u00a0é世🎉\u2028\t\n"
	if got, want := pyEscape(s, '\'', false), `ab\'c"d\\e\x01\x7f\x85\xa0é世🎉\u2028\t\n`; got != want {
		t.Errorf("repr form = %s, want %s", got, want)
	}
	if got, want := pyEscape(s, '\'', true), `ab\'c"d\\e\x01\x7f\x85\xa0\xe9\u4e16\U0001f389\u2028\t\n`; got != want {
		t.Errorf("ascii form = %s, want %s", got, want)
	}
}

// TestSecretFormsBase64Middles: for a secret in a longer base64 text, the
// characters that encode its bytes alone, at each offset.
func TestSecretFormsBase64Middles(t *testing.T) {
	forms := secretForms("abcd")
	for _, want := range []string{"YWJjZA==", "YWJjZA", "YWJjZ", "FiY2", "hYmNk"} {
		found := false
		for _, f := range forms {
			found = found || f == want
		}
		if !found {
			t.Errorf("secretForms(abcd) lacks %q: %q", want, forms)
		}
	}
}
