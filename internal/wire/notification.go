package wire

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tproxy/tproxy"
)

// The hot notifications — event, metric, log, heartbeat — are most of what
// crosses the wire while a step runs. The functions in this file encode and
// decode them without the maps that a generic JSON-RPC engine builds for
// every message. They handle the common shapes and report anything else as
// not handled, so that the caller takes the generic path: what they do
// accept, they treat exactly as encoding/json and sourcegraph/jsonrpc2 do
// (the fuzz tests check it differentially).

// ParseNotification recognises a frame that is a JSON-RPC 2.0 notification
// of one of the hot methods: a JSON object with exactly the members
// "jsonrpc" (the string "2.0"), "method" (MethodEvent, MethodMetric,
// MethodLog or MethodHeartbeat) and "params" (an object), in any order,
// with no escapes in the member names or the method. It returns the
// method, one of those constants, and the params, a slice of frame.
//
// ok is false for every other frame, valid or not: a request, a response,
// another method, another shape. The frame then takes the generic path,
// which decides what it is.
func ParseNotification(frame []byte) (method string, params []byte, ok bool) {
	return parseNotification(frame)
}

func parseNotification(frame []byte) (method string, params []byte, ok bool) {
	if !utf8.Valid(frame) {
		return "", nil, false
	}
	i := skipSpace(frame, 0)
	if i >= len(frame) || frame[i] != '{' {
		return "", nil, false
	}
	var seenVersion bool
	for i++; ; i++ {
		i = skipSpace(frame, i)
		end, escaped := scanString(frame, i)
		if end < 0 || escaped {
			return "", nil, false
		}
		key := frame[i+1 : end-1]
		if i = skipSpace(frame, end); i >= len(frame) || frame[i] != ':' {
			return "", nil, false
		}
		i = skipSpace(frame, i+1)
		switch string(key) {
		case "jsonrpc":
			end, _ := scanString(frame, i)
			if seenVersion || end < 0 || string(frame[i:end]) != `"2.0"` {
				return "", nil, false
			}
			seenVersion, i = true, end
		case "method":
			end, escaped := scanString(frame, i)
			if method != "" || end < 0 || escaped {
				return "", nil, false
			}
			switch string(frame[i+1 : end-1]) {
			case tproxy.MethodEvent:
				method = tproxy.MethodEvent
			case tproxy.MethodMetric:
				method = tproxy.MethodMetric
			case tproxy.MethodLog:
				method = tproxy.MethodLog
			case tproxy.MethodHeartbeat:
				method = tproxy.MethodHeartbeat
			default:
				return "", nil, false
			}
			i = end
		case "params":
			if params != nil || i >= len(frame) || frame[i] != '{' {
				return "", nil, false
			}
			end := scanValue(frame, i, 0, false)
			if end < 0 {
				return "", nil, false
			}
			params, i = frame[i:end], end
		default:
			return "", nil, false
		}
		if i = skipSpace(frame, i); i >= len(frame) {
			return "", nil, false
		}
		if frame[i] == '}' {
			break
		}
		if frame[i] != ',' {
			return "", nil, false
		}
	}
	if skipSpace(frame, i+1) != len(frame) || !seenVersion || method == "" || params == nil {
		return "", nil, false
	}
	return method, params, true
}

// RawEvent is an Event decoded without building its Data map: each data
// field keeps its value as the JSON text that came over the wire.
type RawEvent struct {
	// Name, Timestamp, StepID and Source are as in Event.
	Name      string
	Timestamp time.Time
	StepID    string
	Source    string
	// Data holds the data fields in wire order; keys are distinct.
	Data []RawField
}

// Event decodes e into the Event json.Unmarshal of its params gives.
func (e *RawEvent) Event() (tproxy.Event, error) {
	ev := tproxy.Event{Name: e.Name, Timestamp: e.Timestamp, StepID: e.StepID, Source: e.Source}
	if len(e.Data) > 0 {
		ev.Data = make(map[string]any, len(e.Data))
		for _, f := range e.Data {
			var v any
			if err := json.Unmarshal(f.Value, &v); err != nil {
				return tproxy.Event{}, fmt.Errorf("event %q: data %q: %w", e.Name, f.Key, err)
			}
			ev.Data[f.Key] = v
		}
	}
	return ev, nil
}

// RawField is one data field of a RawEvent.
type RawField struct {
	// Key is the field's key, unescaped.
	Key string
	// Value is the field's value as valid JSON text. It aliases the
	// params it was parsed from.
	Value []byte
}

// ParseEvent decodes the params of an event notification into e, reusing
// e.Data's storage. It handles params that are a JSON object whose members
// are among "name", "timestamp", "step_id" (strings) and "data" (an
// object), each at most once, with a non-empty name and a timestamp (the
// contract requires both), whose data keys are distinct, and whose
// numbers all fit a float64. For those, e holds exactly what json.Unmarshal
// into an Event gives, with each Data value left as JSON text. It returns
// false for anything else, valid or not; use json.Unmarshal then.
func ParseEvent(params []byte, e *RawEvent) bool {
	if !utf8.Valid(params) {
		*e = RawEvent{Data: e.Data[:0]}
		return false
	}
	end := parseEventAt(params, skipSpace(params, 0), e)
	return end >= 0 && skipSpace(params, end) == len(params)
}

// parseEventAt parses the event params object at b[i] into e, as
// ParseEvent does, and returns the index after it, or -1. b is valid
// UTF-8.
func parseEventAt(b []byte, i int, e *RawEvent) int {
	// The strings of the event e held before are reused where they are
	// the same: a stream of events repeats names, step ids and keys.
	prev := *e
	*e = RawEvent{Data: e.Data[:0]}
	if i >= len(b) || b[i] != '{' {
		return -1
	}
	var seen [4]bool
	for i++; ; i++ {
		i = skipSpace(b, i)
		end, escaped := scanString(b, i)
		if end < 0 || escaped {
			return -1
		}
		key := b[i+1 : end-1]
		if i = skipSpace(b, end); i >= len(b) || b[i] != ':' {
			return -1
		}
		i = skipSpace(b, i+1)
		member := -1
		switch string(key) {
		case "name":
			member = 0
		case "timestamp":
			member = 1
		case "step_id":
			member = 2
		case "data":
			member = 3
		}
		if member < 0 || seen[member] {
			return -1
		}
		seen[member] = true
		switch member {
		case 0:
			if e.Name, i = parseString(b, i, prev.Name); i < 0 {
				return -1
			}
		case 2:
			if e.StepID, i = parseString(b, i, prev.StepID); i < 0 {
				return -1
			}
		case 1:
			end, _ := scanString(b, i)
			if end < 0 || e.Timestamp.UnmarshalJSON(b[i:end]) != nil {
				return -1
			}
			i = end
		case 3:
			if i = parseData(b, i, e, prev.Data[:cap(prev.Data)]); i < 0 {
				return -1
			}
		}
		if i = skipSpace(b, i); i >= len(b) {
			return -1
		}
		if b[i] == '}' {
			if !seen[0] || !seen[1] || e.Name == "" {
				return -1 // the contract requires a name and a timestamp
			}
			return i + 1
		}
		if b[i] != ',' {
			return -1
		}
	}
}

// parseString decodes the JSON string at b[i] and returns it and the
// index after it, or -1. It returns reuse, without allocating, if the
// string is the same.
func parseString(b []byte, i int, reuse string) (string, int) {
	end, escaped := scanString(b, i)
	if end < 0 {
		return "", -1
	}
	if !escaped {
		if raw := b[i+1 : end-1]; string(raw) != reuse {
			reuse = string(raw)
		}
		return reuse, end
	}
	s, ok := unescape(b[i:end])
	if !ok {
		return "", -1
	}
	return s, end
}

// unescape decodes a JSON string with escapes (out of line: its variable
// escapes to the heap).
func unescape(b []byte) (string, bool) {
	var s string
	err := json.Unmarshal(b, &s)
	return s, err == nil
}

// parseData decodes the data object at b[i] into e.Data and returns the
// index after it, or -1.
func parseData(b []byte, i int, e *RawEvent, prev []RawField) int {
	if i >= len(b) || b[i] != '{' {
		return -1
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1
	}
	for ; ; i++ {
		var reuse string
		if n := len(e.Data); n < len(prev) {
			reuse = prev[n].Key
		}
		key, end := parseString(b, skipSpace(b, i), reuse)
		if end < 0 {
			return -1
		}
		if i = skipSpace(b, end); i >= len(b) || b[i] != ':' {
			return -1
		}
		i = skipSpace(b, i+1)
		end = scanValue(b, i, 1, true)
		if end < 0 {
			return -1
		}
		for _, f := range e.Data {
			if f.Key == key {
				return -1 // a map keeps the last; let encoding/json decide
			}
		}
		e.Data = append(e.Data, RawField{Key: key, Value: b[i:end]})
		if i = skipSpace(b, end); i >= len(b) {
			return -1
		}
		if b[i] == '}' {
			return i + 1
		}
		if b[i] != ',' {
			return -1
		}
	}
}

// AppendNotification appends the JSON-RPC 2.0 notification of method
// with params as one line, newline included: byte for byte what
// sourcegraph/jsonrpc2's Conn.Notify writes through a Stream. An Event,
// the one notification a busy step sends by the thousand, is encoded
// without reflection or maps (the bench's event rows measure it);
// everything else goes through encoding/json. It returns
// encoding/json's error for params it cannot encode, and then dst
// unchanged.
func AppendNotification(dst []byte, method string, params any) ([]byte, error) {
	start := len(dst)
	dst = append(dst, `{"jsonrpc":"2.0","method":`...)
	dst = appendJSONString(dst, method)
	dst = append(dst, `,"params":`...)
	var err error
	switch p := params.(type) {
	case tproxy.Event:
		dst, err = appendEvent(dst, &p)
	case *tproxy.Event:
		dst, err = appendEvent(dst, p)
	default:
		dst, err = appendMarshal(dst, params)
	}
	if err != nil {
		return dst[:start], err
	}
	return append(dst, '}', '\n'), nil
}

func appendEvent(dst []byte, e *tproxy.Event) ([]byte, error) {
	dst = append(dst, `{"name":`...)
	dst = appendJSONString(dst, e.Name)
	dst = append(dst, `,"timestamp":`...)
	dst, err := appendTime(dst, e.Timestamp)
	if err != nil {
		return dst, err
	}
	dst = appendOptString(dst, `,"step_id":`, e.StepID)
	if len(e.Data) > 0 {
		dst = append(dst, `,"data":`...)
		if dst, err = appendMap(dst, e.Data); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

// appendOptString appends member (`,"key":`) and s, unless s is empty: an
// omitempty string field.
func appendOptString(dst []byte, member, s string) []byte {
	if s == "" {
		return dst
	}
	return appendJSONString(append(dst, member...), s)
}

// appendMap appends m as encoding/json does: keys sorted.
func appendMap[V any](dst []byte, m map[string]V) ([]byte, error) {
	var arr [16]string
	keys := arr[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, k)
		dst = append(dst, ':')
		var err error
		if dst, err = appendJSONValue(dst, m[k]); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

// appendJSONValue appends v as encoding/json encodes it.
func appendJSONValue(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case string:
		return appendJSONString(dst, v), nil
	case bool:
		return strconv.AppendBool(dst, v), nil
	case int:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(dst, v, 10), nil
	case int32:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case uint64:
		return strconv.AppendUint(dst, v, 10), nil
	}
	return appendMarshal(dst, v)
}

func appendMarshal(dst []byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

// appendTime appends t as time.Time's MarshalJSON does.
func appendTime(dst []byte, t time.Time) ([]byte, error) {
	if _, off := t.Zone(); off%60 != 0 || off <= -24*3600 || off >= 24*3600 || t.Year() < 0 || t.Year() > 9999 {
		return appendMarshal(dst, t) // the rare shapes, and the errors
	}
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"'), nil
}

// appendJSONString appends s as encoding/json encodes a string (with its
// HTML escaping). Printable ASCII without quotes, backslashes and HTML
// specials is copied; anything else goes through encoding/json.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
