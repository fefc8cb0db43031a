package worker

import (
	"fmt"
	"reflect"
)

// Summarizer is implemented by step outputs that describe themselves. The
// summary, which must encode as JSON, is what crosses the wire in place of
// the output.
type Summarizer interface {
	// Summary returns the JSON-encodable description of the output.
	Summary() any
}

// summarize describes an output without sending it: its own summary, or its
// type and, for containers, its length, or, for a scalar, its value.
func summarize(v any) any {
	if s, ok := v.(Summarizer); ok {
		return s.Summary()
	}
	sum := map[string]any{"type": fmt.Sprintf("%T", v)}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array, reflect.Map, reflect.String, reflect.Chan:
		sum["len"] = rv.Len()
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		sum["value"] = v
	}
	return sum
}
