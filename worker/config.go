package worker

import (
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// ConfigError reports a step config that does not fit what its driver
// reads: an unknown key, a value of the wrong type, or a value its
// Validate method refused. A step that fails with it has the error type
// tproxy.ErrorTypeConfig. A Validate method may return one itself to name
// the field at fault.
type ConfigError struct {
	// StepID is the step whose config is at fault; DecodeConfig and the
	// check at prepare fill it in.
	StepID string
	// Field is the config member at fault, dotted for nested members
	// and with an index for arrays (source.columns[2].name), or empty
	// when the config as a whole is at fault.
	Field string
	// Reason says what is wrong, naming the field.
	Reason string
	// Err is the underlying error, if any: the JSON decoder's, or the
	// one Validate returned.
	Err error
}

// Error names the step and the reason.
func (e *ConfigError) Error() string {
	if e.StepID == "" {
		return "config: " + e.Reason
	}
	return fmt.Sprintf("step %q: config: %s", e.StepID, e.Reason)
}

// Unwrap returns Err.
func (e *ConfigError) Unwrap() error { return e.Err }

// DecodeConfig decodes the step's configuration into v, a pointer to a
// struct or map, through JSON, strictly: a key that no field of v's type
// takes, at any depth, is a *ConfigError naming the key and the nearest
// key v takes, so that a typo fails the step instead of leaving a field
// at its zero value. Keys match fields as in encoding/json (the json tag
// or the field name, any case). A value of the wrong type is a
// *ConfigError naming the field. If v has a method Validate() error, it
// is called once v is decoded, and its error fails the decode (a
// *ConfigError it returns keeps its Field).
//
// To accept keys v does not know, decode into a map[string]any, read
// Config directly, or give the type an UnmarshalJSON method: a type that
// decodes itself is not checked for unknown keys, at the top or nested.
// A driver that returns DecodeConfig's error fails with error type
// tproxy.ErrorTypeConfig; with Typed the same check also runs at prepare.
func (s *Step) DecodeConfig(v any) error {
	return decodeConfig(s.id, s.config, v)
}

func decodeConfig(stepID string, config map[string]any, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		// A programming error, not the config's: not a ConfigError.
		return fmt.Errorf("step %q: DecodeConfig needs a non-nil pointer, got %T", stepID, v)
	}
	if ce := checkKeys("", config, rv.Type().Elem()); ce != nil {
		ce.StepID = stepID
		return ce
	}
	b, err := json.Marshal(config)
	if err != nil {
		return &ConfigError{StepID: stepID, Reason: err.Error(), Err: err}
	}
	if err := json.Unmarshal(b, v); err != nil {
		ce := &ConfigError{StepID: stepID, Reason: err.Error(), Err: err}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			ce.Field = te.Field
			ce.Reason = fmt.Sprintf("%s: got a JSON %s, want %s", fieldName(te.Field), te.Value, te.Type)
		}
		return ce
	}
	if val, ok := v.(interface{ Validate() error }); ok {
		if err := val.Validate(); err != nil {
			ce := &ConfigError{Reason: err.Error(), Err: err}
			var own *ConfigError
			if errors.As(err, &own) {
				ce.Field, ce.Reason = own.Field, own.Reason
			}
			ce.StepID = stepID
			return ce
		}
	}
	return nil
}

func fieldName(f string) string {
	if f == "" {
		return "the config"
	}
	return strconv.Quote(f)
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// checkKeys finds the first key of val (in sorted order, depth first)
// that type t does not take, and names the nearest key it does. It
// checks only keys: values of the wrong shape are left to the decoder,
// which names them.
func checkKeys(path string, val any, t reflect.Type) *ConfigError {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
		return nil // it decodes itself, and is lenient if it likes
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := val.(map[string]any)
		if !ok {
			return nil
		}
		fields := jsonFields(t)
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			f, ok := matchField(fields, k)
			if !ok {
				return unknownKey(path, k, fields)
			}
			if ce := checkKeys(join(path, k), obj[k], f.typ); ce != nil {
				return ce
			}
		}
	case reflect.Map:
		obj, ok := val.(map[string]any)
		if !ok {
			return nil
		}
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			if ce := checkKeys(join(path, k), obj[k], t.Elem()); ce != nil {
				return ce
			}
		}
	case reflect.Slice, reflect.Array:
		arr, ok := val.([]any)
		if !ok {
			return nil
		}
		for i, e := range arr {
			if ce := checkKeys(fmt.Sprintf("%s[%d]", path, i), e, t.Elem()); ce != nil {
				return ce
			}
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// jsonField is a key a struct takes, as encoding/json names it.
type jsonField struct {
	name string
	typ  reflect.Type
}

// jsonFields lists the keys struct type t takes, with the fields of
// embedded structs promoted as encoding/json promotes them. (A name
// that two embedded structs share at one depth is dropped by
// encoding/json; here it is kept, which can only accept a key, never
// refuse one the decoder takes.)
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	seen := map[string]bool{}
	var walk func(t reflect.Type, visited map[reflect.Type]bool)
	walk = func(t reflect.Type, visited map[reflect.Type]bool) {
		if visited[t] {
			return
		}
		visited[t] = true
		var embedded []reflect.Type
		for i := range t.NumField() {
			sf := t.Field(i)
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			ft := sf.Type
			if sf.Anonymous && name == "" {
				et := ft
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if et.Kind() == reflect.Struct {
					embedded = append(embedded, et)
					continue
				}
			}
			if !sf.IsExported() {
				continue
			}
			if name == "" {
				name = sf.Name
			}
			if !seen[name] {
				seen[name] = true
				out = append(out, jsonField{name: name, typ: ft})
			}
		}
		// Fields of embedded structs are shallower-loses: the outer
		// struct's own fields win, as in encoding/json.
		for _, et := range embedded {
			walk(et, visited)
		}
	}
	walk(t, map[reflect.Type]bool{})
	return out
}

// matchField finds the field key decodes into: the exact name first,
// then, as encoding/json does, a name equal under case folding.
func matchField(fields []jsonField, key string) (jsonField, bool) {
	for _, f := range fields {
		if f.name == key {
			return f, true
		}
	}
	for _, f := range fields {
		if strings.EqualFold(f.name, key) {
			return f, true
		}
	}
	return jsonField{}, false
}

func unknownKey(path, key string, fields []jsonField) *ConfigError {
	full := join(path, key)
	ce := &ConfigError{Field: full}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	slices.Sort(names)
	switch near, ok := nearest(key, names); {
	case ok:
		ce.Reason = fmt.Sprintf("unknown key %q (did you mean %q?)", full, join(path, near))
	case len(names) == 0:
		where := "this driver's config"
		if path != "" {
			where = strconv.Quote(path)
		}
		ce.Reason = fmt.Sprintf("unknown key %q (%s takes no keys)", full, where)
	default:
		ce.Reason = fmt.Sprintf("unknown key %q (known keys: %s)", full, quoteList(names, 12))
	}
	return ce
}

func quoteList(names []string, max int) string {
	var b strings.Builder
	for i, n := range names {
		if i == max {
			fmt.Fprintf(&b, ", and %d more", len(names)-max)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(n))
	}
	return b.String()
}

// nearest returns the candidate closest to key by edit distance (case
// folded; a swap of two neighbours counts as one edit), if one is close
// enough to be a typo of it: at most 2 edits, and fewer than half of the
// key's characters.
func nearest(key string, candidates []string) (string, bool) {
	best, bestDist := "", -1
	for _, c := range candidates {
		d := editDistance(strings.ToLower(key), strings.ToLower(c))
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	n := len([]rune(key))
	if bestDist < 0 || bestDist > 2 || 2*bestDist >= n {
		return "", false
	}
	return best, true
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of adjacent
// characters, each one edit.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// Three rows: the one before the previous is needed for
	// transpositions.
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

// Typed returns a Driver that decodes each step's config into a C, as
// Step.DecodeConfig does (unknown keys refused, C's Validate method
// called if it has one), and runs f with it. The driver declares its
// config this way: the worker checks the config of every step of the
// manifest that uses the driver when the host prepares the session,
// before any step runs, and refuses a config that does not fit with
// tproxy.CodeInvalidConfig naming the step and the field. The host
// reports that as a *tproxy.ManifestError, so a typo in the last step's
// config is found before the first step has run.
//
//	type extractConfig struct {
//		Path string `json:"path"`
//	}
//
//	w.Register("extract", worker.Typed(func(ctx context.Context, s *worker.Step, cfg extractConfig) error {
//		…
//	}))
func Typed[C any](f func(ctx context.Context, s *Step, cfg C) error) Driver {
	return typedDriver[C]{f: f}
}

type typedDriver[C any] struct {
	f func(ctx context.Context, s *Step, cfg C) error
}

func (d typedDriver[C]) Run(ctx context.Context, s *Step) error {
	var cfg C
	if err := s.DecodeConfig(&cfg); err != nil {
		return err
	}
	return d.f(ctx, s, cfg)
}

func (d typedDriver[C]) checkConfig(stepID string, config map[string]any) error {
	var cfg C
	return decodeConfig(stepID, config, &cfg)
}

// configChecker is a driver that declared its config (Typed): prepare
// checks every step's config with it.
type configChecker interface {
	checkConfig(stepID string, config map[string]any) error
}
