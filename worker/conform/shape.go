package conform

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	protocheck "github.com/tproxy/tproxy/internal/check"
)

// shape reads a JSON object the worker sent (decoded with UseNumber) the
// way the document's field tables describe it. A member that is missing
// or of the wrong type is reported through fail, and the accessor returns
// the zero value: in a check, fail ends the check; while validating a
// notification in the read loop, it records the first problem.
type shape struct {
	what string // e.g. "exec_step result"
	m    map[string]any
	fail func(msg string)
}

// asShape returns v as a shape, or reports that it is not an object.
func asShape(what string, v any, fail func(string)) (shape, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		fail(fmt.Sprintf("%s is %s, not an object", what, jsonType(v)))
		return shape{what: what, m: map[string]any{}, fail: fail}, false
	}
	return shape{what: what, m: m, fail: fail}, true
}

func (s shape) failf(format string, args ...any) {
	s.fail(s.what + ": " + fmt.Sprintf(format, args...))
}

// get returns a member; JSON null counts as absent (§3).
func (s shape) get(key string) (any, bool) {
	v, ok := s.m[key]
	if !ok || v == nil {
		return nil, false
	}
	return v, true
}

func (s shape) has(key string) bool {
	_, ok := s.get(key)
	return ok
}

func (s shape) need(key string) (any, bool) {
	v, ok := s.get(key)
	if !ok {
		s.failf("member %q is missing", key)
	}
	return v, ok
}

func (s shape) wrong(key string, v any, want string) {
	s.failf("member %q is %s, not %s", key, jsonType(v), want)
}

func (s shape) str(key string) string {
	v, ok := s.need(key)
	if !ok {
		return ""
	}
	return s.asStr(key, v)
}

func (s shape) optStr(key string) (string, bool) {
	v, ok := s.get(key)
	if !ok {
		return "", false
	}
	return s.asStr(key, v), true
}

func (s shape) asStr(key string, v any) string {
	str, ok := v.(string)
	if !ok {
		s.wrong(key, v, "a string")
	}
	return str
}

// nonEmpty is str for a member that must not be empty.
func (s shape) nonEmpty(key string) string {
	v := s.str(key)
	if v == "" && s.has(key) {
		s.failf("member %q is empty", key)
	}
	return v
}

func (s shape) integer(key string) int64 {
	v, ok := s.need(key)
	if !ok {
		return 0
	}
	return s.asInt(key, v)
}

func (s shape) optInteger(key string) (int64, bool) {
	v, ok := s.get(key)
	if !ok {
		return 0, false
	}
	return s.asInt(key, v), true
}

// asInt accepts any notation of an integral value (§3: 3, 3.0, 3e0).
func (s shape) asInt(key string, v any) int64 {
	n, ok := jsonInt(v)
	if !ok {
		s.wrong(key, v, "an integer")
	}
	return n
}

func (s shape) number(key string) float64 {
	v, ok := s.need(key)
	if !ok {
		return 0
	}
	return s.asNumber(key, v)
}

func (s shape) asNumber(key string, v any) float64 {
	n, ok := v.(json.Number)
	if !ok {
		s.wrong(key, v, "a number")
		return 0
	}
	f, _ := strconv.ParseFloat(string(n), 64)
	return f
}

func (s shape) boolean(key string) bool {
	v, ok := s.need(key)
	if !ok {
		return false
	}
	b, ok := v.(bool)
	if !ok {
		s.wrong(key, v, "a boolean")
	}
	return b
}

// id reads a required member of type id (§3).
func (s shape) id(key string) string {
	v := s.str(key)
	if s.has(key) {
		s.checkID(key, v)
	}
	return v
}

func (s shape) optID(key string) (string, bool) {
	v, ok := s.optStr(key)
	if ok {
		s.checkID(key, v)
	}
	return v, ok
}

func (s shape) checkID(key, v string) {
	if err := protocheck.ID(key, v); err != nil {
		s.failf("member %q is not an id: %v", key, err)
	}
}

func (s shape) timestamp(key string) {
	v := s.str(key)
	if s.has(key) {
		if err := checkTimestamp(v); err != nil {
			s.failf("member %q: %v", key, err)
		}
	}
}

func (s shape) object(key string) shape {
	v, _ := s.need(key)
	sh, _ := asShape(fmt.Sprintf("%s: member %q", s.what, key), v, s.fail)
	return sh
}

func (s shape) optObject(key string) (shape, bool) {
	v, ok := s.get(key)
	if !ok {
		return shape{what: s.what, m: map[string]any{}, fail: s.fail}, false
	}
	return asShape(fmt.Sprintf("%s: member %q", s.what, key), v, s.fail)
}

func (s shape) strings(key string) []string {
	v, ok := s.need(key)
	if !ok {
		return nil
	}
	return s.asStrings(key, v)
}

func (s shape) optStrings(key string) ([]string, bool) {
	v, ok := s.get(key)
	if !ok {
		return nil, false
	}
	return s.asStrings(key, v), true
}

func (s shape) asStrings(key string, v any) []string {
	a, ok := v.([]any)
	if !ok {
		s.wrong(key, v, "an array of strings")
		return nil
	}
	out := make([]string, 0, len(a))
	for i, e := range a {
		str, ok := e.(string)
		if !ok {
			s.failf("member %q: element %d is %s, not a string", key, i, jsonType(e))
			return nil
		}
		out = append(out, str)
	}
	return out
}

// artifact is one entry of an artifacts array (§10).
type artifact struct {
	path   string
	size   int64
	sha256 string // lower-cased
}

// artifacts reads an optional array of artifacts (§10): clean relative
// paths, sizes ≥ 0, 64 hexadecimal digits.
func (s shape) artifacts(key string) []artifact {
	v, ok := s.get(key)
	if !ok {
		return nil
	}
	a, ok := v.([]any)
	if !ok {
		s.wrong(key, v, "an array of artifacts")
		return nil
	}
	var out []artifact
	seen := map[string]bool{}
	for i, e := range a {
		as, ok := asShape(fmt.Sprintf("%s: %s[%d]", s.what, key, i), e, s.fail)
		if !ok {
			return nil
		}
		art := artifact{path: as.str("path"), size: as.integer("size"), sha256: strings.ToLower(as.str("sha256"))}
		if err := protocheck.ArtifactPath(art.path); err != nil && as.has("path") {
			as.failf("the path is not clean and relative (§10): %v", err)
		}
		if art.size < 0 {
			as.failf("size %d is negative", art.size)
		}
		if !isSHA256(art.sha256) && as.has("sha256") {
			as.failf("sha256 %q is not 64 hexadecimal digits", art.sha256)
		}
		if seen[art.path] {
			as.failf("path %q is listed twice", art.path)
		}
		seen[art.path] = true
		out = append(out, art)
	}
	return out
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F') {
			return false
		}
	}
	return true
}

// checkTimestamp accepts an RFC 3339 date-time with a time-zone offset,
// with or without fractional seconds (§3).
func checkTimestamp(s string) error {
	if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
		return fmt.Errorf("%q is not an RFC 3339 timestamp with an offset", s)
	}
	return nil
}

// jsonInt returns a json.Number's value if it is integral, in any notation.
func jsonInt(v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<62 {
		return 0, false
	}
	return int64(f), true
}

// jsonType names a decoded value's JSON type for messages.
func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number:
		return "the number " + string(v)
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// jsonEqual compares decoded JSON values; numbers by value, whatever
// their notation.
func jsonEqual(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		b, ok := b.(json.Number)
		return ok && numKey(a) == numKey(b)
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !jsonEqual(a[i], b[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			w, ok := b[k]
			if !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	default:
		return a == b
	}
}

// numKey is a number's exact value as text: 7, 7.0 and 7e0 give "7".
func numKey(n json.Number) string {
	r, ok := new(big.Rat).SetString(string(n))
	if !ok {
		return string(n)
	}
	return r.RatString()
}

// idKey identifies a request id by JSON type and value, so that a
// response's id can be matched to the request's: "7" and 7 differ, 7 and
// 7.0 do not.
func idKey(v any) string {
	switch v := v.(type) {
	case string:
		return "s:" + v
	case json.Number:
		return "n:" + numKey(v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("?:%v", v)
}

// looseIDKey is idKey without the type, to explain a mismatch.
func looseIDKey(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return numKey(v)
	}
	return idKey(v)
}

// idText shows an id as JSON.
func idText(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case json.Number:
		return string(v)
	case nil:
		return "null"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// decodeJSON decodes one JSON text with numbers kept as json.Number.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}
