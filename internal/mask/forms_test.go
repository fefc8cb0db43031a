package mask_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/mask"
)

// textEncoding is a way a text holding a secret reaches a message: enc
// encodes the whole text; form, what enc turns the secret alone into, as
// found inside the encoded text (nil: enc's output without quotes).
type textEncoding struct {
	name string
	enc  func(text string) string
	form func(secret string) string
}

func jsonMarshal(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func jsonNoHTML(s string) string {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	e.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// unquote strips the quotes an encoding puts around a whole text.
func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'' || s[0] == '`') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

func quoted(s string) string { return unquote(strconv.Quote(s)) }

func twice(outer, inner func(string) string) func(string) string {
	return func(s string) string { return unquote(outer(unquote(inner(s)))) }
}

// textEncodings are the encodings item 9 of issue 13 names: raw,
// JSON-escaped (with and without HTML escaping), Go-quoted (%q, %+q,
// QuoteToGraphic, url.Parse and strconv errors), quoted twice,
// URL-escaped, hexadecimal. Base64 is checkForms' own.
var textEncodings = []textEncoding{
	{"raw", func(s string) string { return s }, nil},
	{"%q", func(s string) string { return fmt.Sprintf("%q", s) }, nil},
	{"%+q", func(s string) string { return fmt.Sprintf("%+q", s) }, nil},
	{"%#q", func(s string) string { return fmt.Sprintf("%#q", s) }, func(s string) string {
		if strconv.CanBackquote(s) {
			return s
		}
		return quoted(s)
	}},
	{"QuoteToGraphic", strconv.QuoteToGraphic, nil},
	{"json.Marshal", jsonMarshal, nil},
	{"json no HTML", jsonNoHTML, nil},
	{"url.Parse error", func(s string) string {
		_, err := url.Parse("http://host/" + s + "\x7f")
		return fmt.Sprint(err)
	}, quoted},
	{"strconv.Atoi error", func(s string) string {
		_, err := strconv.Atoi(s)
		return fmt.Sprint(err)
	}, quoted},
	{"%q of %q", func(s string) string { return strconv.Quote(strconv.Quote(s)) }, twice(strconv.Quote, strconv.Quote)},
	{"json of %q", func(s string) string { return jsonMarshal(strconv.Quote(s)) }, twice(jsonMarshal, strconv.Quote)},
	{"%q of json", func(s string) string { return strconv.Quote(jsonMarshal(s)) }, twice(strconv.Quote, jsonMarshal)},
	{"json of json", func(s string) string { return jsonMarshal(jsonMarshal(s)) }, twice(jsonMarshal, jsonMarshal)},
	{"QueryEscape", url.QueryEscape, nil},
	{"PathEscape", url.PathEscape, nil},
	{"URL userinfo", func(s string) string {
		return (&url.URL{Scheme: "postgres", User: url.UserPassword("bob", s), Host: "db", Path: "/x"}).String()
	}, func(s string) string { return strings.TrimPrefix(url.UserPassword("", s).String(), ":") }},
	{"URL path", func(s string) string { return (&url.URL{Scheme: "https", Host: "h", Path: "/" + s}).String() },
		func(s string) string { return strings.TrimPrefix((&url.URL{Path: "/" + s}).EscapedPath(), "/") }},
	{"%x", func(s string) string { return fmt.Sprintf("%x", s) }, nil},
	{"%X", func(s string) string { return fmt.Sprintf("%X", s) }, nil},
}

// secretAlone returns the secret's form under enc.
func secretAlone(enc textEncoding, secret string) string {
	if enc.form != nil {
		return enc.form(secret)
	}
	return unquote(enc.enc(secret))
}

// base64Stable returns the characters of enc's encoding of p+secret+q
// that depend on the secret's bytes alone: the ones that do not change
// when every bit of p and q is flipped.
func base64Stable(enc *base64.Encoding, p, secret, q []byte) string {
	flip := func(b []byte) []byte {
		c := bytes.Clone(b)
		for i := range c {
			c[i] ^= 0xff
		}
		return c
	}
	a := enc.EncodeToString(bytes.Join([][]byte{p, secret, q}, nil))
	b := enc.EncodeToString(bytes.Join([][]byte{flip(p), secret, flip(q)}, nil))
	from := len(p) * 8 / 6 // the first character that may encode a secret bit
	to := from
	for from < len(a) && a[from] != b[from] {
		from++
	}
	for to = from; to < len(a) && a[to] == b[to]; to++ {
	}
	return a[from:to]
}

// leaked reports whether form occurs in out other than overlapping a
// Masked: a form that runs into the mask is no longer whole.
func leaked(out, form string) bool {
	if form == "" {
		return false
	}
	for i := 0; ; {
		j := strings.Index(out[i:], form)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(form)
		overlaps := false
		for k := 0; ; {
			l := strings.Index(out[k:], tproxy.Masked)
			if l < 0 {
				break
			}
			ms, me := k+l, k+l+len(tproxy.Masked)
			if ms < end && start < me {
				overlaps = true
				break
			}
			k = ms + 1
		}
		if !overlaps {
			return true
		}
		i = start + 1
	}
}

// checkForms masks, for every encoding, a text that holds secret between
// prefix and suffix, and fails if the secret's form under that encoding
// survives. It returns how many forms it checked.
func checkForms(t *testing.T, m *mask.Masker, secret, prefix, suffix string) int {
	t.Helper()
	checked := 0
	text := prefix + secret + suffix
	for _, enc := range textEncodings {
		form := secretAlone(enc, secret)
		out := m.String("before " + enc.enc(text) + " after")
		for _, f := range []string{secret, form} {
			if len(f) >= tproxy.MinSecretLen && leaked(out, f) {
				t.Errorf("%s: form %q of secret %q survived masking: %q", enc.name, f, secret, out)
			}
		}
		checked++
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		for off := range 3 {
			p := []byte(strings.Repeat("p", off) + prefix)
			p = p[:off+3*(len(prefix)/3)]
			stable := base64Stable(enc, p, []byte(secret), []byte(suffix))
			out := m.String("blob:" + enc.EncodeToString([]byte(string(p)+secret+suffix)) + ".")
			if len(stable) >= tproxy.MinSecretLen && leaked(out, stable) {
				t.Errorf("base64 at offset %d: %q, the part of %q that encodes secret %q alone, survived masking: %q",
					off, stable, enc.EncodeToString([]byte(string(p)+secret+suffix)), secret, out)
			}
			checked++
		}
	}
	return checked
}

// trickySecrets hold what makes encoders differ: quotes, backslashes,
// control characters, HTML specials, URL specials, non-ASCII, the line
// separator, astral runes.
var trickySecrets = []string{
	`Se"cr\et` + "\x01Value<12345>",
	"pa ss+wo/rd?&=#%:@",
	"tab\there\nnew\rline\x7f\x1b[2J",
	"ünïcødé-秘密-🔑-\u2028-\u00a0",
	"it's 'quoted' \"twice\"",
	"hunter22",
	"AAAA",
	"\u0085\u200b\ufeffzero-width",
}

func TestMaskerMasksEveryForm(t *testing.T) {
	for _, secret := range trickySecrets {
		m := newMasker(t, tproxy.Secrets{})
		m.Config(map[string]any{"password": secret})
		for _, pre := range []string{"", "x", "ab", "login failed for bob: "} {
			checkForms(t, m, secret, pre, " (retrying)")
		}
	}
}

// TestMaskerMasksPythonForms: Python's repr and ascii of a text holding a
// secret, as a Python worker's error messages quote it. The expected
// outputs were printed by CPython 3.
func TestMaskerMasksPythonForms(t *testing.T) {
	secret := "ab'c\"d\\e\x01\x7f\u0085\u00a0é世🎉\u2028\t\n"
	m := newMasker(t, tproxy.Secrets{})
	m.AddValues(secret)
	for _, text := range []string{
		`'ab\'c"d\\e\x01\x7f\x85\xa0é世🎉\u2028\t\n'`,
		`'ab\'c"d\\e\x01\x7f\x85\xa0\xe9\u4e16\U0001f389\u2028\t\n'`,
	} {
		if got := m.String("KeyError(" + text + ")"); got != "KeyError('"+tproxy.Masked+"')" {
			t.Errorf("String(%s) = %q", text, got)
		}
	}
	m2 := newMasker(t, tproxy.Secrets{})
	m2.AddValues("it's")
	if got := m2.String(`"it's" and 'it\'s'`); got != `"`+tproxy.Masked+`" and '`+tproxy.Masked+`'` {
		t.Errorf("String = %q: Python quotes a ' with \" alone, escapes it in a text that also holds \"", got)
	}
}

func TestMaskerShortValuesOnlyAsWholeValues(t *testing.T) {
	m := newMasker(t, tproxy.Secrets{})
	got := m.Config(map[string]any{"pin": "123", "user": "abc"})
	if d := cmp.Diff(map[string]any{"pin": tproxy.Masked, "user": "abc"}, got); d != "" {
		t.Error(d)
	}
	text := "123 " + strconv.Quote("123") + " " + base64.StdEncoding.EncodeToString([]byte("123")) + " " + hex.EncodeToString([]byte("123"))
	if m.HasValues() || m.String(text) != text {
		t.Errorf("a %d-byte secret is masked in free text: %q", 3, m.String(text))
	}
}

// TestMaskerEventMasksEveryWorkerString: item 11 of issue 13. Every
// string a worker controls is masked, not only data and tag values.
func TestMaskerEventMasksEveryWorkerString(t *testing.T) {
	const s = "hunterXYZ99"
	m := newMasker(t, tproxy.Secrets{})
	m.AddValues(s)
	e := m.Event(tproxy.Event{Name: "ev_" + s, StepID: "step_" + s, Source: tproxy.SourceWorker, Data: map[string]any{
		"k_" + s: 1,
		"bytes":  []byte("raw " + s + " bytes"),
		"nested": map[string]any{"deep_" + s: []any{map[string]any{"x": "v " + s}}},
		"tags":   map[string]string{"t_" + s: "ok"},
		"list":   []string{"a", s},
	}})
	want := tproxy.Event{Name: "ev_" + tproxy.Masked, StepID: "step_" + tproxy.Masked, Source: tproxy.SourceWorker, Data: map[string]any{
		"k_" + tproxy.Masked: 1,
		"bytes":              maskedBase64(m, []byte("raw "+s+" bytes")),
		"nested":             map[string]any{"deep_" + tproxy.Masked: []any{map[string]any{"x": "v " + tproxy.Masked}}},
		"tags":               map[string]string{"t_" + tproxy.Masked: "ok"},
		"list":               []string{"a", tproxy.Masked},
	}}
	if d := cmp.Diff(want, e); d != "" {
		t.Errorf("Event (-want +got):\n%s", d)
	}
	if b, _ := json.Marshal(e); strings.Contains(string(b), base64.StdEncoding.EncodeToString([]byte(s))[:8]) {
		t.Errorf("the event still holds the secret's base64: %s", b)
	}

	mt := m.Metric(tproxy.Metric{Name: "m_" + s, Unit: "u_" + s, StepID: s, Tags: map[string]string{"t_" + s: "v_" + s}})
	wantM := tproxy.Metric{Name: "m_" + tproxy.Masked, Unit: "u_" + tproxy.Masked, StepID: tproxy.Masked,
		Tags: map[string]string{"t_" + tproxy.Masked: "v_" + tproxy.Masked}}
	if d := cmp.Diff(wantM, mt); d != "" {
		t.Errorf("Metric (-want +got):\n%s", d)
	}

	r := m.LogRecord(tproxy.LogRecord{Level: "INFO" + s, Message: "m " + s, StepID: s, Attrs: map[string]any{"a_" + s: s}})
	wantR := tproxy.LogRecord{Level: "INFO" + tproxy.Masked, Message: "m " + tproxy.Masked, StepID: tproxy.Masked,
		Attrs: map[string]any{"a_" + tproxy.Masked: tproxy.Masked}}
	if d := cmp.Diff(wantR, r); d != "" {
		t.Errorf("LogRecord (-want +got):\n%s", d)
	}
}

func maskedBase64(m *mask.Masker, b []byte) string {
	return m.String(base64.StdEncoding.EncodeToString(b))
}

func TestMaskerRenamedKeyDoesNotOverwrite(t *testing.T) {
	const s = "hunterXYZ99"
	m := newMasker(t, tproxy.Secrets{})
	m.AddValues(s)
	in := map[string]any{"k_" + s: 1, "k_" + tproxy.Masked: 2, "k_" + tproxy.Masked + "#2": 3}
	got, _ := m.Value(in).(map[string]any)
	if len(got) != 3 {
		t.Fatalf("Value = %v: a renamed key overwrote another", got)
	}
	var sum int
	for k, v := range got {
		if strings.Contains(k, s) {
			t.Errorf("key %q still holds the secret", k)
		}
		sum += v.(int)
	}
	if sum != 6 {
		t.Errorf("Value = %v: values lost", got)
	}
	tags := m.StringMap(map[string]string{"k_" + s: "a", "k_" + tproxy.Masked: "b"})
	if len(tags) != 2 {
		t.Errorf("StringMap = %v: a renamed key overwrote another", tags)
	}
}

func TestMaskerStringDoesNotAllocateWhenNothingIsSecret(t *testing.T) {
	m := newMasker(t, tproxy.Secrets{})
	m.Config(map[string]any{"password": `Se"cr\et<1>`, "token": "tok-abcdefgh"})
	text := strings.Repeat("an ordinary log line, with <html> & \"quotes\" and \\ backslashes; ", 4)
	if n := testing.AllocsPerRun(100, func() { m.String(text) }); n != 0 {
		t.Errorf("String allocates %v times for a text with no secret", n)
	}
	b := []byte(text)
	if out, n := m.MaskPrefix(b, false); n != len(b) || &out[0] != &b[0] {
		t.Errorf("MaskPrefix copied or held back a text with no secret (n = %d of %d)", n, len(b))
	}
}

// TestMaskPrefixAgreesWithStringWhateverTheSplit: text masked as it
// arrives, in pieces split anywhere, comes out as the whole text masked
// at once, and what MaskPrefix holds back is always shorter than the
// longest form of a secret.
func TestMaskPrefixAgreesWithStringWhateverTheSplit(t *testing.T) {
	m := newMasker(t, tproxy.Secrets{})
	m.AddValues(trickySecrets...)
	var text strings.Builder
	for i, s := range trickySecrets {
		for _, enc := range textEncodings {
			fmt.Fprintf(&text, "%d %s: %s\n", i, enc.name, enc.enc("x"+s+"y"))
		}
	}
	whole := m.String(text.String())
	longest := 0
	for _, s := range trickySecrets {
		longest = max(longest, len(jsonMarshal(jsonMarshal(s)))*2, len(url.QueryEscape(s)), len(hex.EncodeToString([]byte(s))))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		var out, pending []byte
		rest := []byte(text.String())
		for len(rest) > 0 {
			k := 1 + rng.IntN(min(len(rest), []int{1, 7, 64, 4096}[round%4]))
			pending = append(pending, rest[:k]...)
			rest = rest[k:]
			masked, n := m.MaskPrefix(pending, false)
			out = append(out, masked...)
			pending = append(pending[:0], pending[n:]...)
			if len(pending) >= longest {
				t.Fatalf("MaskPrefix holds back %d bytes, more than the longest secret form", len(pending))
			}
		}
		masked, n := m.MaskPrefix(pending, true)
		if n != len(pending) {
			t.Fatalf("MaskPrefix(final) covered %d of %d bytes", n, len(pending))
		}
		out = append(out, masked...)
		if string(out) != whole {
			t.Fatalf("round %d: masked in pieces differs from masked whole:\n%s", round, cmp.Diff(whole, string(out)))
		}
	}
}

// TestExcerptMasksACutSecret: the end of a stderr that starts in the
// middle of a secret, as stderr_tail did with "ecretValue12345".
func TestExcerptMasksACutSecret(t *testing.T) {
	const s = "SecretValue12345"
	m := newMasker(t, tproxy.Secrets{})
	m.AddValues(s)
	tests := []struct{ in, want string }{
		{"ecretValue12345 in the tail\n", tproxy.Masked + " in the tail\n"},
		{"the head ends with SecretVal", "the head ends with " + tproxy.Masked},
		{`quoted head "SecretV`, `quoted head "` + tproxy.Masked},
		{"5 short cut\n", "5 short cut\n"},       // under MinSecretLen: too little to mask
		{"2345 cut\n", tproxy.Masked + " cut\n"}, // MinSecretLen bytes: masked
		{"cretValue1", tproxy.Masked},            // inside the secret
		{"a SecretValue12345 b", "a " + tproxy.Masked + " b"},
		{"nothing here", "nothing here"},
		{base64.StdEncoding.EncodeToString([]byte("xx" + s))[6:], tproxy.Masked},
	}
	for _, tt := range tests {
		if got := m.Excerpt(tt.in); got != tt.want {
			t.Errorf("Excerpt(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	var nilM *mask.Masker
	if nilM.Excerpt(s) != s {
		t.Error("nil Masker masked an excerpt")
	}
	if !utf8.ValidString(m.Excerpt("é" + s[:6])) {
		t.Error("Excerpt broke a rune")
	}
}
