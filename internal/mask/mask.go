// Package mask is the masking engine: it learns secret values from
// configs and replaces them, in every form they take, wherever they would
// leave the worker or reach a file (docs/protocol.md, secrets).
package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tproxy/tproxy"
)

// Masker replaces secrets by Masked. It learns secret values from the
// configs it is shown (Config) and then masks them wherever they appear:
// in values under a secret key, and as substrings of any string. A nil
// *Masker masks nothing. It is safe for concurrent use.
//
// A secret is masked in every form that text takes when it is quoted or
// encoded, because error messages and logs quote: its raw bytes; escaped
// as in JSON (with and without HTML escaping, with non-ASCII as \u
// escapes, with upper-case \u digits), as by Go's strconv.Quote,
// QuoteToASCII and QuoteToGraphic (%q, %+q; url.Parse and strconv errors
// quote this way) and as by Python's repr and ascii, each without the
// surrounding quotes so that it is found inside a longer quoted text;
// quoted twice, as JSON or Go strings (a quoted message quoted again);
// URL-escaped (url.QueryEscape, url.PathEscape, a URL's path, fragment
// and userinfo); as hexadecimal, lower and upper case; and as base64,
// standard and URL alphabets, padded or not: the encoding of the whole
// secret, and, for a secret inside a longer base64 text, the characters
// that encode the secret's bytes alone, for each of the 3 offsets the
// secret can have within base64's 3-byte groups (a character at either end
// that mixes the secret's bits with its neighbours' stays). It is not
// found under other encodings, in base64 broken into lines, or split by
// other text.
//
// Where forms overlap, the one that starts first is replaced, and of those
// that start at one place, the longest; so where two different secrets
// overlap in a text, what of the second runs past the first stays.
type Masker struct {
	keys     []keyPattern
	pointers [][]string

	mu     sync.Mutex // serializes learning
	values []string   // known secret values
	match  atomic.Pointer[matcher]
}

// NewMasker returns a Masker for the policy s. It returns an error naming
// a malformed JSON pointer.
func NewMasker(s tproxy.Secrets) (*Masker, error) {
	m := &Masker{}
	for _, k := range slices.Concat(tproxy.DefaultSecretKeys, s.Keys) {
		if p, ok := parseKeyPattern(k); ok && !slices.Contains(m.keys, p) {
			m.keys = append(m.keys, p)
		}
	}
	for _, p := range s.Pointers {
		toks, err := parsePointer(p)
		if err != nil {
			return nil, err
		}
		m.pointers = append(m.pointers, toks)
	}
	return m, nil
}

// keyPattern is a parsed key pattern (see DefaultSecretKeys).
type keyPattern struct {
	words  string  // the pattern's words, concatenated
	suffix bool    // it ended in '$': it must equal the key's last words
	bytes  byteSet // the bytes in words: a key without one of them cannot match
}

// byteSet is a set of bytes.
type byteSet [4]uint64

func (s *byteSet) add(c byte) { s[c>>6] |= 1 << (c & 63) }

// within reports whether every byte of s is in t.
func (s *byteSet) within(t *byteSet) bool {
	return s[0]&^t[0]|s[1]&^t[1]|s[2]&^t[2]|s[3]&^t[3] == 0
}

func parseKeyPattern(p string) (keyPattern, bool) {
	kp := keyPattern{suffix: strings.HasSuffix(p, "$")}
	if kp.suffix {
		p = p[:len(p)-1]
	}
	w, _ := keyWords(p, nil, nil)
	kp.words = string(w)
	for _, c := range w {
		kp.bytes.add(c)
	}
	return kp, kp.words != ""
}

// keyWords appends to w the words of key (see DefaultSecretKeys),
// lower-cased and concatenated, and to start, for each byte appended to
// w, whether it begins a word.
func keyWords(key string, w []byte, start []bool) ([]byte, []bool) {
	const (
		sep = iota
		lower
		upper
		digit
	)
	kind := func(c byte) int {
		switch {
		case 'a' <= c && c <= 'z':
			return lower
		case 'A' <= c && c <= 'Z':
			return upper
		case '0' <= c && c <= '9':
			return digit
		}
		return sep
	}
	prev := sep
	for i := 0; i < len(key); i++ {
		c := key[i]
		k := kind(c)
		if k == sep {
			prev = sep
			continue
		}
		begins := prev == sep ||
			k == upper && (prev == lower || prev == digit) ||
			k == upper && prev == upper && i+1 < len(key) && kind(key[i+1]) == lower
		if k == upper {
			c += 'a' - 'A'
		}
		w = append(w, c)
		start = append(start, begins)
		prev = k
	}
	return w, start
}

// SecretKey reports whether key names a secret under m's key patterns.
func (m *Masker) SecretKey(key string) bool {
	if m == nil {
		return false
	}
	// Keys are short: their words fit on the stack.
	var wbuf [64]byte
	var sbuf [64]bool
	w, start := keyWords(key, wbuf[:0], sbuf[:0])
	var have byteSet
	for _, c := range w {
		have.add(c)
	}
	for i := range m.keys {
		p := &m.keys[i]
		if !p.bytes.within(&have) {
			continue
		}
		if p.suffix {
			if i := len(w) - len(p.words); i >= 0 && start[i] && string(w[i:]) == p.words {
				return true
			}
		} else if containsString(w, p.words) {
			return true
		}
	}
	return false
}

// containsString is strings.Contains(string(b), s) without the copy.
func containsString(b []byte, s string) bool {
	if len(s) == 0 {
		return true
	}
	for i := 0; i+len(s) <= len(b); {
		j := bytes.IndexByte(b[i:len(b)-len(s)+1], s[0])
		if j < 0 {
			return false
		}
		i += j
		if string(b[i:i+len(s)]) == s {
			return true
		}
		i++
	}
	return false
}

// Config learns the secret values of cfg (under secret keys, at m's
// pointers) and returns a masked deep copy of cfg, fit to be written
// anywhere.
func (m *Masker) Config(cfg map[string]any) map[string]any {
	if m == nil || cfg == nil {
		return cfg
	}
	m.Learn(cfg)
	// Mask a private deep copy: setPointer writes in place.
	out, _ := m.Value(deepCopy(cfg)).(map[string]any)
	for _, toks := range m.pointers {
		setPointer(out, toks, tproxy.Masked)
	}
	return out
}

// Learn makes m mask the secret values of cfg (under secret keys, at m's
// pointers) from now on, without copying cfg.
func (m *Masker) Learn(cfg map[string]any) {
	if m == nil || cfg == nil {
		return
	}
	var found []string
	collectSecrets(m, cfg, false, &found)
	for _, toks := range m.pointers {
		if v, ok := lookupPointer(cfg, toks); ok {
			collectSecrets(m, v, true, &found)
		}
	}
	m.learn(found)
}

// AddValues makes m mask each of values as a secret.
func (m *Masker) AddValues(values ...string) {
	if m != nil {
		m.learn(values)
	}
}

func (m *Masker) learn(found []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	for _, v := range found {
		if len(v) >= tproxy.MinSecretLen && !slices.Contains(m.values, v) {
			m.values = append(m.values, v)
			changed = true
		}
	}
	if !changed {
		return
	}
	// The matcher is built once per set of values; masking only reads it.
	var forms []string
	for _, v := range m.values {
		forms = append(forms, secretForms(v)...)
	}
	m.match.Store(newMatcher(forms))
}

// collectSecrets gathers the string forms of secret leaves under v. all
// says v itself is secret.
func collectSecrets(m *Masker, v any, all bool, out *[]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			collectSecrets(m, e, all || m.SecretKey(k), out)
		}
	case []any:
		for _, e := range x {
			collectSecrets(m, e, all, out)
		}
	case map[string]string:
		for k, e := range x {
			if all || m.SecretKey(k) {
				*out = append(*out, e)
			}
		}
	case []string:
		if all {
			*out = append(*out, x...)
		}
	case string:
		if all {
			*out = append(*out, x)
		}
	case nil, bool:
	default:
		if all {
			if b, err := json.Marshal(x); err == nil {
				*out = append(*out, strings.Trim(string(b), `"`))
			}
		}
	}
}

// String returns s with every known secret value, in each of the forms
// listed on Masker, replaced by Masked.
func (m *Masker) String(s string) string {
	out, _ := m.str(s)
	return out
}

// str is String, also reporting whether anything was masked. It does not
// allocate when nothing was.
func (m *Masker) str(s string) (string, bool) {
	if m == nil {
		return s, false
	}
	mt := m.match.Load()
	if mt == nil {
		return s, false
	}
	return mt.replace(s)
}

// Bytes is String for a byte slice; it returns b itself when nothing in it
// is secret.
func (m *Masker) Bytes(b []byte) []byte {
	out, _ := m.MaskPrefix(b, true)
	return out
}

// HasValues reports whether m knows any secret value to mask in free
// text.
func (m *Masker) HasValues() bool { return m != nil && m.match.Load() != nil }

// MaskPrefix masks text that arrives in pieces, such as a pipe's: a
// secret split across pieces, however far apart in time, is masked as if
// the text had come whole. It returns the masked form of b's first n
// bytes, the longest prefix of b that the bytes after b cannot change:
// b[n:] starts what could still be a secret, and is shorter than the
// longest form of a secret. The caller passes b[n:] again, followed by
// what comes next. When final is set (no more text follows), n is len(b).
// The masked text is b itself when nothing in it was masked.
func (m *Masker) MaskPrefix(b []byte, final bool) (masked []byte, n int) {
	if m == nil {
		return b, len(b)
	}
	mt := m.match.Load()
	if mt == nil {
		return b, len(b)
	}
	return mt.prefix(b, final)
}

// Excerpt masks s, a piece cut out of a longer text (the last bytes of a
// log, the first of a response body), as String does, and also what could
// be a secret cut by its ends: s's first bytes when they are how a form
// of a secret ends, and its last bytes when they are how one begins, from
// MinSecretLen bytes on (so no more than MinSecretLen-1 bytes of a
// secret survive at either end); and all of s when it lies inside one.
func (m *Masker) Excerpt(s string) string {
	if m == nil {
		return s
	}
	mt := m.match.Load()
	if mt == nil {
		return s
	}
	if len(s) >= tproxy.MinSecretLen && len(s) < mt.maxLen {
		for _, f := range mt.forms {
			if len(f) > len(s) && strings.Contains(f, s) {
				return tproxy.Masked
			}
		}
	}
	head := mt.cutEnd(s)
	tail := mt.cutStart(s[head:])
	out, _ := mt.replace(s[head : len(s)-tail])
	if head > 0 {
		out = tproxy.Masked + out
	}
	if tail > 0 {
		out += tproxy.Masked
	}
	return out
}

// matcher finds the forms of a Masker's secrets in text.
type matcher struct {
	forms  []string        // longest first
	first  [256][]uint32   // indexes into forms, by first byte, longest first
	pairs  [1 << 10]uint64 // the first two bytes of every form, as a bit set
	maxLen int
}

// pair reports whether some form begins with the bytes a, b. Most text
// has no such pair, and skips the search for a form at that byte.
func (mt *matcher) pair(a, b byte) bool {
	p := uint(a)<<8 | uint(b)
	return mt.pairs[p>>6]&(1<<(p&63)) != 0
}

func newMatcher(forms []string) *matcher {
	slices.SortFunc(forms, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	forms = slices.Compact(forms)
	mt := &matcher{forms: forms}
	for i, f := range forms {
		mt.first[f[0]] = append(mt.first[f[0]], uint32(i))
		p := uint(f[0])<<8 | uint(f[1]) // every form has tproxy.MinSecretLen bytes or more
		mt.pairs[p>>6] |= 1 << (p & 63)
		mt.maxLen = max(mt.maxLen, len(f))
	}
	return mt
}

// at returns the length of the longest form at s[i:], or 0. Unless
// final, it reports undecided when s[i:] is a proper prefix of a form
// that no longer form outranks: what follows s could make it match.
func (mt *matcher) at(s string, i int, final bool) (n int, undecided bool) {
	rest := s[i:]
	for _, fi := range mt.first[s[i]] {
		f := mt.forms[fi]
		if len(f) <= len(rest) {
			if rest[:len(f)] == f {
				return len(f), false
			}
		} else if !final && f[:len(rest)] == rest {
			return 0, true
		}
	}
	return 0, false
}

// replace masks s; it returns s itself when nothing matched.
func (mt *matcher) replace(s string) (string, bool) {
	var b []byte
	last := 0
	// No form fits in the last MinSecretLen-1 bytes.
	for i := 0; i+tproxy.MinSecretLen <= len(s); {
		if !mt.pair(s[i], s[i+1]) {
			i++
			continue
		}
		n, _ := mt.at(s, i, true)
		if n == 0 {
			i++
			continue
		}
		if b == nil {
			b = make([]byte, 0, len(s)+len(tproxy.Masked))
		}
		b = append(append(b, s[last:i]...), tproxy.Masked...)
		i += n
		last = i
	}
	if b == nil {
		return s, false
	}
	return string(append(b, s[last:]...)), true
}

// atBytes is at for a byte slice.
func (mt *matcher) atBytes(b []byte, i int, final bool) (n int, undecided bool) {
	rest := b[i:]
	for _, fi := range mt.first[b[i]] {
		f := mt.forms[fi]
		if len(f) <= len(rest) {
			if string(rest[:len(f)]) == f {
				return len(f), false
			}
		} else if !final && f[:len(rest)] == string(rest) {
			return 0, true
		}
	}
	return 0, false
}

// prefix is Masker.MaskPrefix.
func (mt *matcher) prefix(b []byte, final bool) ([]byte, int) {
	var out []byte
	last := 0
	i := 0
	for i < len(b) {
		if i+1 < len(b) && !mt.pair(b[i], b[i+1]) || i+1 == len(b) && len(mt.first[b[i]]) == 0 {
			i++
			continue
		}
		n, undecided := mt.atBytes(b, i, final)
		if undecided {
			break
		}
		if n == 0 {
			i++
			continue
		}
		if out == nil {
			out = make([]byte, 0, len(b)+len(tproxy.Masked))
		}
		out = append(append(out, b[last:i]...), tproxy.Masked...)
		i += n
		last = i
	}
	if out == nil {
		return b[:i], i
	}
	return append(out, b[last:i]...), i
}

// cutEnd returns the length of the longest prefix of s, of at least
// MinSecretLen bytes, that is how a form ends (a proper suffix of it).
func (mt *matcher) cutEnd(s string) int {
	best := 0
	for _, f := range mt.forms {
		if k := overlap(s[:min(len(s), len(f)-1)], f); k >= tproxy.MinSecretLen {
			best = max(best, k)
		}
	}
	return best
}

// cutStart returns the length of the longest suffix of s, of at least
// MinSecretLen bytes, that is how a form begins (a proper prefix of it).
func (mt *matcher) cutStart(s string) int {
	best := 0
	for _, f := range mt.forms {
		if k := overlap(f[:len(f)-1], s); k >= tproxy.MinSecretLen {
			best = max(best, k)
		}
	}
	return best
}

// overlap returns the length of the longest prefix of pattern that is a
// suffix of text, in time linear in their lengths (Knuth-Morris-Pratt):
// secrets can be long, and repetitive.
func overlap(pattern, text string) int {
	if pattern == "" {
		return 0
	}
	fail := make([]int, len(pattern)) // fail[i]: the longest proper border of pattern[:i+1]
	for i, k := 1, 0; i < len(pattern); i++ {
		for k > 0 && pattern[i] != pattern[k] {
			k = fail[k-1]
		}
		if pattern[i] == pattern[k] {
			k++
		}
		fail[i] = k
	}
	k := 0
	for i := 0; i < len(text); i++ {
		for k > 0 && (k == len(pattern) || text[i] != pattern[k]) {
			k = fail[k-1]
		}
		if text[i] == pattern[k] {
			k++
		}
	}
	return k
}

// secretForms returns the forms in which text that contains s holds it
// (see Masker), each at least MinSecretLen bytes long.
func secretForms(s string) []string {
	forms := []string{s}
	add := func(f string) {
		if len(f) >= tproxy.MinSecretLen && !slices.Contains(forms, f) {
			forms = append(forms, f)
		}
	}
	escaped := escapedForms(s)
	for _, e := range escaped {
		add(e)
	}
	// Quoted twice: an error message holding a quoted secret, quoted
	// again by whoever reports it.
	for _, e := range []string{jsonEscape(s, jsonGo), goQuoteInner(strconv.Quote(s))} {
		add(jsonEscape(e, jsonGo))
		add(jsonEscape(e, jsonNoHTML))
		add(goQuoteInner(strconv.Quote(e)))
	}
	add(url.QueryEscape(s))
	add(url.PathEscape(s))
	add((&url.URL{Path: s}).EscapedPath())
	add((&url.URL{Fragment: s}).EscapedFragment())
	add(strings.TrimPrefix(url.UserPassword("", s).String(), ":"))
	add(url.User(s).String())
	b := []byte(s)
	add(hex.EncodeToString(b))
	add(strings.ToUpper(hex.EncodeToString(b)))
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		add(enc.EncodeToString(b))
		raw := enc.WithPadding(base64.NoPadding)
		add(raw.EncodeToString(b))
		for off := range 3 {
			add(base64Middle(raw, b, off))
		}
	}
	return forms
}

// JSON escaping profiles.
const (
	jsonHTML     = 1 << iota // <, > and & as \u escapes
	jsonLineSep              // U+2028 and U+2029 as \u escapes
	jsonASCII                // everything beyond ASCII as \u escapes
	jsonUpperHex             // \u escapes with upper-case digits

	jsonGo     = jsonHTML | jsonLineSep // encoding/json's default
	jsonNoHTML = jsonLineSep            // json.Encoder with SetEscapeHTML(false)
)

// escapedForms returns s escaped as a string literal's content by common
// encoders: JSON's (Go, Python, JavaScript, Java), Go's and Python's.
func escapedForms(s string) []string {
	var out []string
	for _, p := range []int{jsonGo, jsonNoHTML, 0, jsonASCII, jsonASCII | jsonHTML} {
		out = append(out, jsonEscape(s, p), jsonEscape(s, p|jsonUpperHex))
	}
	out = append(out,
		goQuoteInner(strconv.Quote(s)), goQuoteInner(strconv.QuoteToASCII(s)), goQuoteInner(strconv.QuoteToGraphic(s)),
		pyEscape(s, '\'', false), pyEscape(s, 0, false), pyEscape(s, '\'', true), pyEscape(s, 0, true))
	return out
}

func goQuoteInner(q string) string { return q[1 : len(q)-1] }

// jsonEscape escapes s as the content of a JSON string under profile p.
// Invalid UTF-8 becomes \ufffd, as encoding/json writes it.
func jsonEscape(s string, p int) string {
	hexd := "0123456789abcdef"
	if p&jsonUpperHex != 0 {
		hexd = "0123456789ABCDEF"
	}
	u := func(b []byte, r rune) []byte {
		return append(b, '\\', 'u', hexd[r>>12&0xf], hexd[r>>8&0xf], hexd[r>>4&0xf], hexd[r&0xf])
	}
	var b []byte
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r == '\b':
			b = append(b, `\b`...)
		case r == '\f':
			b = append(b, `\f`...)
		case r == '\n':
			b = append(b, `\n`...)
		case r == '\r':
			b = append(b, `\r`...)
		case r == '\t':
			b = append(b, `\t`...)
		case r < 0x20,
			p&jsonASCII != 0 && r == 0x7f, // Python's ensure_ascii
			p&jsonHTML != 0 && (r == '<' || r == '>' || r == '&'),
			p&jsonLineSep != 0 && (r == '\u2028' || r == '\u2029'),
			r == utf8.RuneError && size == 1:
			b = u(b, r)
		case p&jsonASCII != 0 && r >= utf8.RuneSelf:
			if r1, r2 := utf16Pair(r); r1 != 0 {
				b = u(u(b, r1), r2)
			} else {
				b = u(b, r)
			}
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return string(b)
}

// utf16Pair returns the surrogate pair of r, or zeros when r needs none.
func utf16Pair(r rune) (rune, rune) {
	if r < 0x10000 {
		return 0, 0
	}
	r -= 0x10000
	return 0xd800 + r>>10&0x3ff, 0xdc00 + r&0x3ff
}

// pyEscape escapes s as the content of the string literal that Python's
// repr (or, with ascii, its ascii) writes, with quote as the quote it
// escapes: repr quotes with ' and escapes it unless s holds ' and not ",
// and which it does depends on the whole text s is part of.
func pyEscape(s string, quote rune, ascii bool) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\' || r == quote && quote != 0:
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r < utf8.RuneSelf:
			b.WriteRune(r)
		case ascii || !unicode.IsPrint(r):
			switch {
			case r <= 0xff:
				fmt.Fprintf(&b, `\x%02x`, r)
			case r <= 0xffff:
				fmt.Fprintf(&b, `\u%04x`, r)
			default:
				fmt.Fprintf(&b, `\U%08x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// base64Middle returns the characters of the base64 encoding (enc, not
// padded) of a text in which b starts off bytes into a 3-byte group that
// encode b's bits alone: the ones that do not change with the bytes around
// b.
func base64Middle(enc *base64.Encoding, b []byte, off int) string {
	t := enc.EncodeToString(append(make([]byte, off), b...))
	// Character c encodes bits [6c, 6c+6); b holds bits [8off, 8(off+len(b))).
	from, to := (8*off+5)/6, 8*(off+len(b))/6
	if from >= to {
		return ""
	}
	return t[from:to]
}

// Value returns v with secrets masked: the value under a secret key is
// replaced whole, known secret values inside strings are replaced, and so
// are they inside map keys (a key holding one is renamed, with "#2",
// "#3", ... appended should it then collide with another) and inside the
// base64 form of []byte values, which then become masked strings. v is
// not modified; a copy is returned when anything had to change. Values of
// types other than JSON's own (structs, typed maps and slices) are masked
// through their JSON encoding.
func (m *Masker) Value(v any) any {
	if m == nil {
		return v
	}
	out, _ := m.value(v)
	return out
}

// value returns the masked value and whether it differs from v.
func (m *Masker) value(v any) (any, bool) {
	switch x := v.(type) {
	case nil, bool, float64, float32, int, int8, int16, int32, int64,
		uint, uint8, uint16, uint32, uint64, json.Number, time.Time, time.Duration:
		return v, false
	case string:
		return m.str(x)
	case []byte:
		// As JSON writes it: the form every record of it takes.
		if s, changed := m.str(base64.StdEncoding.EncodeToString(x)); changed {
			return s, true
		}
		return v, false
	case map[string]any:
		var cp map[string]any
		for k, e := range x {
			var (
				ne      any
				changed bool
			)
			if m.SecretKey(k) {
				ne, changed = tproxy.Masked, true
			} else {
				ne, changed = m.value(e)
			}
			nk, renamed := m.str(k)
			if (changed || renamed) && cp == nil {
				cp = make(map[string]any, len(x))
				for k2, e2 := range x {
					cp[k2] = e2
				}
			}
			if cp != nil {
				if renamed {
					delete(cp, k)
					nk = freeKey(cp, nk)
				}
				cp[nk] = ne
			}
		}
		if cp == nil {
			return x, false
		}
		return cp, true
	case []any:
		var cp []any
		for i, e := range x {
			ne, changed := m.value(e)
			if changed && cp == nil {
				cp = slices.Clone(x)
			}
			if cp != nil {
				cp[i] = ne
			}
		}
		if cp == nil {
			return x, false
		}
		return cp, true
	case map[string]string:
		return m.stringMap(x)
	case []string:
		var cp []string
		for i, e := range x {
			if s, changed := m.str(e); changed {
				if cp == nil {
					cp = slices.Clone(x)
				}
				cp[i] = s
			}
		}
		if cp == nil {
			return x, false
		}
		return cp, true
	case error:
		return m.str(x.Error())
	case fmt.Stringer:
		if t, changed := m.str(x.String()); changed {
			return t, true
		}
		return v, false
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return v, false
		}
		var generic any
		if err := json.Unmarshal(b, &generic); err != nil {
			return v, false
		}
		if masked, changed := m.value(generic); changed {
			return masked, true
		}
		return v, false
	}
}

// freeKey returns k, or k with "#2", "#3", ... appended, whichever is
// not yet a key of mp: a renamed key must not overwrite another.
func freeKey[V any](mp map[string]V, k string) string {
	if _, taken := mp[k]; !taken {
		return k
	}
	for i := 2; ; i++ {
		if c := k + "#" + strconv.Itoa(i); !mapHas(mp, c) {
			return c
		}
	}
}

func mapHas[V any](mp map[string]V, k string) bool {
	_, ok := mp[k]
	return ok
}

// StringMap returns tags with values under secret keys and known secret
// values masked, in keys as in values (a key holding a secret is renamed
// as Value renames it); tags itself when nothing changed.
func (m *Masker) StringMap(tags map[string]string) map[string]string {
	if m == nil {
		return tags
	}
	out, _ := m.stringMap(tags)
	return out
}

func (m *Masker) stringMap(tags map[string]string) (map[string]string, bool) {
	var cp map[string]string
	for k, v := range tags {
		nv := tproxy.Masked
		if !m.SecretKey(k) {
			nv, _ = m.str(v)
		}
		nk, renamed := m.str(k)
		if (nv != v || renamed) && cp == nil {
			cp = make(map[string]string, len(tags))
			for k2, v2 := range tags {
				cp[k2] = v2
			}
		}
		if cp != nil {
			if renamed {
				delete(cp, k)
				nk = freeKey(cp, nk)
			}
			cp[nk] = nv
		}
	}
	if cp == nil {
		return tags, false
	}
	return cp, true
}

// deepCopy copies the maps and slices of a JSON-like value.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		cp := make(map[string]any, len(x))
		for k, e := range x {
			cp[k] = deepCopy(e)
		}
		return cp
	case []any:
		cp := make([]any, len(x))
		for i, e := range x {
			cp[i] = deepCopy(e)
		}
		return cp
	case map[string]string:
		cp := make(map[string]string, len(x))
		for k, e := range x {
			cp[k] = e
		}
		return cp
	case []string:
		return slices.Clone(x)
	default:
		return v
	}
}

// Event returns e with every string a worker controls masked: its name,
// step id and data (keys, values, nested values; see Value).
func (m *Masker) Event(e tproxy.Event) tproxy.Event {
	if m == nil {
		return e
	}
	e.Name, _ = m.str(e.Name)
	e.StepID, _ = m.str(e.StepID)
	if len(e.Data) > 0 {
		if d, ok := m.Value(e.Data).(map[string]any); ok {
			e.Data = d
		}
	}
	return e
}

// Metric returns mt with every string a worker controls masked: its name,
// unit, step id and tags (keys and values).
func (m *Masker) Metric(mt tproxy.Metric) tproxy.Metric {
	if m == nil {
		return mt
	}
	mt.Name, _ = m.str(mt.Name)
	mt.Unit, _ = m.str(mt.Unit)
	mt.StepID, _ = m.str(mt.StepID)
	mt.Tags = m.StringMap(mt.Tags)
	return mt
}

// LogRecord returns r with every string a worker controls masked: its
// level, message, step id and attributes (keys, values, nested values).
func (m *Masker) LogRecord(r tproxy.LogRecord) tproxy.LogRecord {
	if m == nil {
		return r
	}
	r.Level, _ = m.str(r.Level)
	r.Message, _ = m.str(r.Message)
	r.StepID, _ = m.str(r.StepID)
	if len(r.Attrs) > 0 {
		if d, ok := m.Value(r.Attrs).(map[string]any); ok {
			r.Attrs = d
		}
	}
	return r
}

// parsePointer splits an RFC 6901 pointer into unescaped tokens.
func parsePointer(p string) ([]string, error) {
	if p == "" {
		return nil, fmt.Errorf("tproxy: secret pointer is empty (the whole config cannot be one secret; name the member, e.g. \"/password\")")
	}
	if p[0] != '/' {
		return nil, fmt.Errorf("tproxy: secret pointer %q does not start with '/'", p)
	}
	toks := strings.Split(p[1:], "/")
	for i, t := range toks {
		for j := 0; j < len(t); j++ {
			if t[j] == '~' && (j+1 == len(t) || (t[j+1] != '0' && t[j+1] != '1')) {
				return nil, fmt.Errorf("tproxy: secret pointer %q: '~' must be followed by 0 or 1", p)
			}
		}
		toks[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return toks, nil
}

func lookupPointer(v any, toks []string) (any, bool) {
	for _, t := range toks {
		switch x := v.(type) {
		case map[string]any:
			e, ok := x[t]
			if !ok {
				return nil, false
			}
			v = e
		case []any:
			i, err := strconv.Atoi(t)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// setPointer replaces the value at toks in v, in place, when it exists.
func setPointer(v any, toks []string, nv any) {
	if len(toks) == 0 {
		return
	}
	parent, ok := lookupPointer(v, toks[:len(toks)-1])
	if !ok {
		return
	}
	last := toks[len(toks)-1]
	switch x := parent.(type) {
	case map[string]any:
		if _, ok := x[last]; ok {
			x[last] = nv
		}
	case []any:
		if i, err := strconv.Atoi(last); err == nil && i >= 0 && i < len(x) {
			x[i] = nv
		}
	}
}
