package tproxy

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Masked is what a secret is replaced by wherever it would leave the worker
// or reach a file.
const Masked = "***MASKED***"

// DefaultSecretKeys are the config key patterns whose values are secrets. A
// key matches a pattern when, lowercased and with '-' read as '_', it
// contains the pattern: "DB_Password", "apiKey", "x-auth-token" all match.
var DefaultSecretKeys = []string{
	"password", "passwd", "secret", "token", "api_key", "apikey",
	"access_key", "private_key", "credential",
}

// MinSecretLen is the shortest secret value that is also masked inside
// free text (event data, log messages, error messages, stderr). A shorter
// value is masked where it stands as a config value, but replacing every
// "42" in every message would destroy the output without protecting much.
const MinSecretLen = 4

// Secrets says which config values are secret. The zero value uses
// DefaultSecretKeys only.
type Secrets struct {
	// Keys are key patterns matched like DefaultSecretKeys, in addition
	// to them.
	Keys []string `json:"keys,omitempty"`
	// Pointers are RFC 6901 JSON pointers, such as "/connection/dsn",
	// into every step's config and into the session config. The values
	// they point at are secret whatever their keys.
	Pointers []string `json:"pointers,omitempty"`
}

// Masker replaces secrets by Masked. It learns secret values from the
// configs it is shown (Config) and then masks them wherever they appear:
// in values under a secret key, and as substrings of any string. A nil
// *Masker masks nothing. It is safe for concurrent use.
type Masker struct {
	keys     []string
	pointers [][]string

	mu     sync.RWMutex
	values []string // known secret values, longest first
	repl   *strings.Replacer
}

// NewMasker returns a Masker for the policy s. It returns an error naming
// a malformed JSON pointer.
func NewMasker(s Secrets) (*Masker, error) {
	m := &Masker{}
	for _, k := range slices.Concat(DefaultSecretKeys, s.Keys) {
		if k = normalizeKey(k); k != "" && !slices.Contains(m.keys, k) {
			m.keys = append(m.keys, k)
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

func normalizeKey(k string) string { return strings.ReplaceAll(strings.ToLower(k), "-", "_") }

// SecretKey reports whether key names a secret under m's key patterns.
func (m *Masker) SecretKey(key string) bool {
	if m == nil {
		return false
	}
	for _, p := range m.keys {
		if containsNormalized(key, p) {
			return true
		}
	}
	return false
}

// containsNormalized reports whether normalizeKey(s) contains the
// normalized pattern p, without allocating.
func containsNormalized(s, p string) bool {
	if !isASCII(s) {
		return strings.Contains(normalizeKey(s), p)
	}
	for i := 0; i+len(p) <= len(s); i++ {
		j := 0
		for ; j < len(p); j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			} else if c == '-' {
				c = '_'
			}
			if c != p[j] {
				break
			}
		}
		if j == len(p) {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
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
		setPointer(out, toks, Masked)
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
		if len(v) >= MinSecretLen && !slices.Contains(m.values, v) {
			m.values = append(m.values, v)
			changed = true
		}
	}
	if !changed {
		return
	}
	// Longest first, so that a secret containing another is masked whole.
	slices.SortFunc(m.values, func(a, b string) int { return len(b) - len(a) })
	args := make([]string, 0, 2*len(m.values))
	for _, v := range m.values {
		args = append(args, v, Masked)
	}
	m.repl = strings.NewReplacer(args...)
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

// String returns s with every known secret value replaced by Masked.
func (m *Masker) String(s string) string {
	if m == nil {
		return s
	}
	m.mu.RLock()
	r := m.repl
	m.mu.RUnlock()
	if r == nil {
		return s
	}
	return r.Replace(s)
}

// Bytes is String for a byte slice; it returns b itself when nothing in it
// is secret.
func (m *Masker) Bytes(b []byte) []byte {
	if m == nil || !m.hasValues() {
		return b
	}
	s := string(b)
	if t := m.String(s); t != s {
		return []byte(t)
	}
	return b
}

// HasValues reports whether m knows any secret value to mask in free
// text.
func (m *Masker) HasValues() bool { return m != nil && m.hasValues() }

func (m *Masker) hasValues() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.repl != nil
}

// Value returns v with secrets masked: the value under a secret key is
// replaced whole, and known secret values inside strings are replaced. v is
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
		s := m.String(x)
		return s, s != x
	case map[string]any:
		var cp map[string]any
		for k, e := range x {
			var (
				ne      any
				changed bool
			)
			if m.SecretKey(k) {
				ne, changed = Masked, true
			} else {
				ne, changed = m.value(e)
			}
			if changed && cp == nil {
				cp = make(map[string]any, len(x))
				for k2, e2 := range x {
					cp[k2] = e2
				}
			}
			if cp != nil {
				cp[k] = ne
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
			if s := m.String(e); s != e {
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
		s := x.Error()
		t := m.String(s)
		return t, t != s
	case fmt.Stringer:
		s := x.String()
		t := m.String(s)
		if t == s {
			return v, false
		}
		return t, true
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

// StringMap returns tags with values under secret keys and known secret
// values masked; tags itself when nothing changed.
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
		nv := v
		if m.SecretKey(k) {
			nv = Masked
		} else {
			nv = m.String(v)
		}
		if nv != v && cp == nil {
			cp = make(map[string]string, len(tags))
			for k2, v2 := range tags {
				cp[k2] = v2
			}
		}
		if cp != nil {
			cp[k] = nv
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

// Event returns e with its data masked.
func (m *Masker) Event(e Event) Event {
	if m == nil || len(e.Data) == 0 {
		return e
	}
	if d, ok := m.Value(e.Data).(map[string]any); ok {
		e.Data = d
	}
	return e
}

// Metric returns mt with its tags masked.
func (m *Masker) Metric(mt Metric) Metric {
	if m == nil {
		return mt
	}
	mt.Tags = m.StringMap(mt.Tags)
	return mt
}

// LogRecord returns r with its message and attributes masked.
func (m *Masker) LogRecord(r LogRecord) LogRecord {
	if m == nil {
		return r
	}
	r.Message = m.String(r.Message)
	if d, ok := m.Value(r.Attrs).(map[string]any); ok {
		r.Attrs = d
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
