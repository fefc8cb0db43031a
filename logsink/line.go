package logsink

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
)

// reserved are the keys a line's own fields use; data fields and tags with
// these keys are renamed (see Files).
var reserved = map[string]bool{
	"ts": true, "seq": true, "session": true, "event": true, "metric": true,
	"value": true, "value_invalid": true, "step_id": true, "unit": true, "source": true,
}

// lineEncoder builds JSONL lines by hand: the key order is fixed, and no
// map is built per line. Its buffers are reused, so it is not safe for
// concurrent use; Files guards it with its mutex.
type lineEncoder struct {
	buf    []byte
	vbuf   bytes.Buffer
	venc   *json.Encoder
	fields []field
}

// field is a data field or tag: the key it is written under, the key it
// has in its map, and for a RawEvent's field its index.
type field struct {
	name, key string
	idx       int
}

func (e *lineEncoder) event(ts time.Time, seq uint64, session string, ev *tproxy.Event) []byte {
	e.eventHead(ts, seq, session, ev.Name, ev.Source, ev.StepID)
	for _, f := range order(e, ev.Data) {
		e.key(f.name)
		e.appendValue(ev.Data[f.key])
	}
	return e.end()
}

// eventHead begins an event's line: the fields before its data.
func (e *lineEncoder) eventHead(ts time.Time, seq uint64, session, name, source, stepID string) {
	e.begin(ts, seq, session)
	e.key("event")
	e.appendString(name)
	if source != "" {
		e.key("source")
		e.appendString(source)
	}
	if stepID != "" {
		e.key("step_id")
		e.appendString(stepID)
	}
}

// rawEvent writes the same line as event does for the Event that
// json.Unmarshal decodes from the params ev was parsed from. A data value
// already written the way encoding/json writes its decoded value (plain
// strings, small integers, literals) is copied; others are decoded and
// written as event writes them.
func (e *lineEncoder) rawEvent(ts time.Time, seq uint64, session string, ev *wire.RawEvent) []byte {
	e.eventHead(ts, seq, session, ev.Name, ev.Source, ev.StepID)
	for _, f := range orderRaw(e, ev.Data) {
		e.key(f.name)
		e.appendRaw(ev.Data[f.idx].Value)
	}
	return e.end()
}

// appendRaw appends the JSON text v (valid, numbers within float64 range)
// as appendValue appends what json.Unmarshal decodes from it.
func (e *lineEncoder) appendRaw(v []byte) {
	var err error
	switch c := v[0]; {
	case c == 't' || c == 'f' || c == 'n':
		e.buf = append(e.buf, v...)
		return
	case c == '"':
		if plainString(v) {
			e.buf = append(e.buf, v...)
			return
		}
		var s string
		if err = json.Unmarshal(v, &s); err == nil {
			e.appendString(s)
			return
		}
	case c == '-' || '0' <= c && c <= '9':
		if smallInt(v) {
			e.buf = append(e.buf, v...)
			return
		}
		var f float64
		if f, err = strconv.ParseFloat(string(v), 64); err == nil {
			e.appendValue(f)
			return
		}
	default:
		var x any
		if err = json.Unmarshal(v, &x); err == nil {
			e.appendValue(x)
			return
		}
	}
	// Unreachable for what wire.ParseEvent accepts; keep the line valid.
	e.buf = append(e.buf, v...)
}

// plainString reports whether the JSON string v holds only printable ASCII
// without escapes: appendString writes its value back as v.
func plainString(v []byte) bool {
	for _, c := range v[1 : len(v)-1] {
		if c < 0x20 || c == '\\' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// smallInt reports whether the JSON number v is an integer of at most 15
// digits: exact as a float64, which appendFloat writes back as v.
func smallInt(v []byte) bool {
	d := v
	if d[0] == '-' {
		d = d[1:]
	}
	if len(d) > 15 {
		return false
	}
	for _, c := range d {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (e *lineEncoder) metric(ts time.Time, seq uint64, session string, m *tproxy.Metric) []byte {
	e.begin(ts, seq, session)
	e.key("metric")
	e.appendString(m.Name)
	e.key("value")
	if invalid := invalidFloat(m.Value); invalid != "" {
		e.buf = append(e.buf, "null"...)
		e.key("value_invalid")
		e.appendString(invalid)
	} else {
		e.appendFloat(m.Value)
	}
	if m.StepID != "" {
		e.key("step_id")
		e.appendString(m.StepID)
	}
	if m.Unit != "" {
		e.key("unit")
		e.appendString(m.Unit)
	}
	for _, f := range order(e, m.Tags) {
		e.key(f.name)
		e.appendString(m.Tags[f.key])
	}
	return e.end()
}

func (e *lineEncoder) begin(ts time.Time, seq uint64, session string) {
	e.buf = append(e.buf[:0], `{"ts":"`...)
	e.buf = ts.UTC().AppendFormat(e.buf, time.RFC3339Nano)
	e.buf = append(e.buf, `","seq":`...)
	e.buf = strconv.AppendUint(e.buf, seq, 10)
	e.key("session")
	e.appendString(session)
}

func (e *lineEncoder) end() []byte {
	e.buf = append(e.buf, '}', '\n')
	return e.buf
}

// maxRetained is the largest buffer an encoder keeps between lines.
const maxRetained = 64 << 10

// release drops the buffers a huge line grew, once it is written: an idle
// session must not hold them.
func (e *lineEncoder) release() {
	if cap(e.buf) > maxRetained {
		e.buf = nil
	}
	if e.vbuf.Cap() > maxRetained {
		e.vbuf = bytes.Buffer{} // venc writes to &e.vbuf, which stays
	}
}

// key appends ,"k": — never the first key, which begin writes.
func (e *lineEncoder) key(k string) {
	e.buf = append(e.buf, ',')
	e.appendString(k)
	e.buf = append(e.buf, ':')
}

// order returns the fields of m to write, sorted by the name they are
// written under.
func order[V any](e *lineEncoder, m map[string]V) []field {
	e.fields = e.fields[:0]
	for k := range m {
		e.fields = append(e.fields, field{key: k})
	}
	return e.sortFields(func(k string) bool { _, ok := m[k]; return ok })
}

// orderRaw is order for the data fields of a RawEvent; field.idx is the
// field's index in data.
func orderRaw(e *lineEncoder, data []wire.RawField) []field {
	e.fields = e.fields[:0]
	for i, f := range data {
		e.fields = append(e.fields, field{key: f.Key, idx: i})
	}
	return e.sortFields(func(k string) bool {
		for _, f := range data {
			if f.Key == k {
				return true
			}
		}
		return false
	})
}

// sortFields names and sorts e.fields, whose keys are the keys of a map
// (has tells which strings are). A reserved key becomes "data.<key>", with
// more "data." until the name is not a key of the map itself; such names
// are distinct from each other and from the keys kept as they are.
func (e *lineEncoder) sortFields(has func(string) bool) []field {
	for i := range e.fields {
		k := e.fields[i].key
		name := k
		if reserved[k] {
			name = "data." + k
			for has(name) {
				name = "data." + name
			}
		}
		e.fields[i].name = name
	}
	if len(e.fields) > 1 {
		slices.SortFunc(e.fields, func(a, b field) int { return strings.Compare(a.name, b.name) })
	}
	return e.fields
}

// invalidFloat names a float JSON cannot hold, or returns "".
func invalidFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return ""
}

// appendString appends s as a JSON string. Plain ASCII, the common case, is
// copied as is; anything else goes through encoding/json.
func (e *lineEncoder) appendString(s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			e.appendJSON(s)
			return
		}
	}
	e.buf = append(e.buf, '"')
	e.buf = append(e.buf, s...)
	e.buf = append(e.buf, '"')
}

// appendValue appends v as JSON, or, if encoding/json cannot encode it, its
// %v string.
func (e *lineEncoder) appendValue(v any) {
	switch v := v.(type) {
	case nil:
		e.buf = append(e.buf, "null"...)
	case string:
		e.appendString(v)
	case bool:
		e.buf = strconv.AppendBool(e.buf, v)
	case int:
		e.buf = strconv.AppendInt(e.buf, int64(v), 10)
	case int64:
		e.buf = strconv.AppendInt(e.buf, v, 10)
	case float64:
		if invalidFloat(v) != "" {
			e.appendString(fmt.Sprint(v))
		} else {
			e.appendFloat(v)
		}
	default:
		if !e.appendJSON(v) {
			e.appendString(fmt.Sprint(v))
		}
	}
}

// appendFloat appends a finite f as encoding/json writes a float64.
func (e *lineEncoder) appendFloat(f float64) {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	e.buf = strconv.AppendFloat(e.buf, f, format, -1, 64)
	if format == 'e' {
		// 1e-07 → 1e-7, as encoding/json does.
		if n := len(e.buf); n >= 4 && e.buf[n-4] == 'e' && e.buf[n-3] == '-' && e.buf[n-2] == '0' {
			e.buf[n-2] = e.buf[n-1]
			e.buf = e.buf[:n-1]
		}
	}
}

// appendJSON appends v encoded by encoding/json, without HTML escaping (the
// readers are log tools, not browsers), and reports whether it could.
func (e *lineEncoder) appendJSON(v any) bool {
	if e.venc == nil {
		e.venc = json.NewEncoder(&e.vbuf)
		e.venc.SetEscapeHTML(false)
	}
	e.vbuf.Reset()
	if err := e.venc.Encode(v); err != nil {
		return false
	}
	e.buf = append(e.buf, bytes.TrimSuffix(e.vbuf.Bytes(), []byte{'\n'})...)
	return true
}
