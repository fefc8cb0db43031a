package wire

import "context"

// RawFunc records one event as ParseEvent decodes it from a notification's
// params, its data values still JSON text, and must record the same as
// the sink's Event would for the Event that json.Unmarshal decodes from
// those params. The RawEvent's slices are valid only during the call.
type RawFunc func(ctx context.Context, e *RawEvent) error

// RawSink is a sink of this module's own that takes events raw: a host
// hands events to EventRaw when its sink has one, saving the cost of
// building each event's Data map.
type RawSink interface {
	// EventRaw records one event, as a RawFunc does.
	EventRaw(ctx context.Context, e *RawEvent) error
}

// filesRaw is logsink's: the raw entry point of a logsink.Files, which it
// keeps unexported so that no internal type is in logsink's API.
var filesRaw func(sink any) (RawFunc, bool)

// SetFilesRaw is called by package logsink, once, to give RawOf the raw
// entry point of its Files.
func SetFilesRaw(f func(sink any) (RawFunc, bool)) { filesRaw = f }

// RawOf returns sink's raw entry point, if it has one.
func RawOf(sink any) (RawFunc, bool) {
	if rs, ok := sink.(RawSink); ok {
		return rs.EventRaw, true
	}
	if filesRaw != nil {
		return filesRaw(sink)
	}
	return nil, false
}
