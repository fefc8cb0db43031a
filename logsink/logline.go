package logsink

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/tproxy/tproxy"
)

// logKeys are the keys of a logs.jsonl line that attrs may not take.
var logKeys = []string{"ts", "seq", "session", "level", "source", "step_id", "msg"}

// appendLog appends r's line of logs.jsonl to b.
func appendLog(b []byte, ts time.Time, seq uint64, session string, r *tproxy.LogRecord) []byte {
	str := func(b []byte, key, v string) []byte {
		b = append(b, ',')
		b = strconv.AppendQuote(b, key)
		b = append(b, ':')
		return appendJSONString(b, v)
	}
	b = append(b, `{"ts":`...)
	b = appendJSONString(b, ts.UTC().Format(time.RFC3339Nano))
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = str(b, "session", session)
	b = str(b, "level", r.Level)
	if r.Source != "" {
		b = str(b, "source", r.Source)
	}
	if r.StepID != "" {
		b = str(b, "step_id", r.StepID)
	}
	b = str(b, "msg", r.Message)
	for _, k := range slices.Sorted(maps.Keys(r.Attrs)) {
		key := k
		for taken(key, k, r.Attrs) {
			key = "attr." + key
		}
		v, err := json.Marshal(r.Attrs[k])
		if err != nil {
			v, _ = json.Marshal(fmt.Sprint(r.Attrs[k]))
		}
		b = append(b, ',')
		b = appendJSONString(b, key)
		b = append(b, ':')
		b = append(b, v...)
	}
	return append(b, '}', '\n')
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	v, _ := json.Marshal(s) // a string always encodes
	return append(b, v...)
}

// taken reports whether key, the line key tried for attr k, is one of the
// line's own keys or another attr's.
func taken(key, k string, attrs map[string]any) bool {
	if slices.Contains(logKeys, key) {
		return true
	}
	_, other := attrs[key]
	return key != k && other
}
