package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/tproxy/tproxy"
)

// decodeResult decodes a call's result into result (a pointer) and checks
// the members the host relies on (docs/protocol.md section 5). A result
// that does not decode, or lacks one of them, is a *ProtocolError naming
// the method and the member: the worker's fault, not a dead worker, and
// the connection stays usable.
func decodeResult(method string, raw []byte, result any) error {
	var err error
	if u, ok := result.(json.Unmarshaler); ok {
		// raw is one valid JSON value (the read loop's parser, or
		// jsonrpc2's decoder, checked it), which is all json.Unmarshal
		// would add: it would scan it again first.
		err = u.UnmarshalJSON(raw)
	} else {
		err = json.Unmarshal(raw, result)
	}
	if err != nil {
		return &ProtocolError{Method: method, Field: faultyMember(raw, result, err), Err: err}
	}
	if field, why := checkResult(raw, result); field != "" {
		return &ProtocolError{Method: method, Field: field, Err: errors.New(why)}
	}
	return nil
}

// checkResult returns the member of a protocol method's result that is
// missing or unusable, and why; "" when there is none. A member whose zero
// value is valid (a duration, a count, a flag) is looked for in raw.
func checkResult(raw []byte, result any) (field, why string) {
	const missing = "missing"
	switch r := result.(type) {
	case *tproxy.PingResult:
		if r.Protocol == 0 {
			return "protocol", missing
		}
	case *tproxy.PrepareResult:
		if r.SessionID == "" {
			return "session_id", missing
		}
	case *tproxy.ExecStepResult:
		if r.StepID == "" {
			return "step_id", missing
		}
		return absent(raw, "duration_ms")
	case *tproxy.CleanupResult:
		if r.SessionID == "" {
			return "session_id", missing
		}
		return absent(raw, "steps_executed")
	case *tproxy.FetchArtifactResult:
		if r.Data == nil {
			return "data", missing
		}
		return absent(raw, "eof")
	}
	return "", ""
}

// absent returns the first of members that the JSON object raw lacks (or
// holds as null).
func absent(raw []byte, members ...string) (field, why string) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return "", "" // decoding already succeeded: cannot happen
	}
	for _, m := range members {
		if v, ok := obj[m]; !ok || string(v) == "null" {
			return m, "missing"
		}
	}
	return "", ""
}

// faultyMember names the member of raw that made decoding it into result
// fail, or "" when the result as a whole is at fault (not an object, say).
// encoding/json names the member only for some errors (not for a
// timestamp that does not parse, say), so the members are tried one by
// one.
func faultyMember(raw []byte, result any, err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		// The path names Go's fields; the result types' decoders embed
		// the plain type as "plain", which is no member.
		path := strings.Split(te.Field, ".")
		return strings.Join(slices.DeleteFunc(path, func(s string) bool { return s == "plain" }), ".")
	}
	t := reflect.TypeOf(result)
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return ""
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return ""
	}
	for _, name := range slices.Sorted(maps.Keys(obj)) {
		f, ok := fieldByJSONName(t.Elem(), name)
		if !ok {
			continue
		}
		if json.Unmarshal(obj[name], reflect.New(f.Type).Interface()) != nil {
			return name
		}
	}
	return ""
}

// fieldByJSONName finds the field of struct type t that encoding/json
// decodes the member name into.
func fieldByJSONName(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == name || tag == "" && strings.EqualFold(f.Name, name) {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// mismatch is the *ProtocolError of a result member that names another
// session or step than the request did.
func mismatch(method, field, got, sent string) error {
	return &ProtocolError{Method: method, Field: field,
		Err: fmt.Errorf("is %q, but the request named %q", got, sent)}
}
