package tproxy

import (
	"bytes"
	"errors"
	"fmt"
)

// DefaultMaxFrameSize is the default cap on one protocol message, in bytes,
// excluding the newline.
const DefaultMaxFrameSize = 16 << 20

// ErrFrameTooLarge is matched by errors.Is for a FrameError raised by a
// frame over the cap, in either direction.
var ErrFrameTooLarge = errors.New("frame too large")

// FrameError reports a protocol message that could not be framed or decoded:
// over the size cap, not UTF-8, not JSON, or not a JSON-RPC 2.0 message. It
// quotes the start of the offending bytes.
type FrameError struct {
	// Op is "read" for bytes from the peer, "write" for a message this side
	// tried to send.
	Op string
	// Reason says what is wrong, e.g. "invalid JSON".
	Reason string
	// Size is the frame's size in bytes. For an oversize frame read from
	// the peer it is the number of bytes seen when the cap was crossed:
	// the error comes then, not at a newline that may never come.
	Size int
	// Limit is the cap in force, for an oversize frame.
	Limit int
	// Quote is the start of the offending bytes.
	Quote []byte
	// Err is the underlying error, if any.
	Err error
}

// Error says what went wrong with which frame, its size and cap where
// known, and quotes the frame's start.
func (e *FrameError) Error() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "tproxy: %s frame: %s", e.Op, e.Reason)
	if e.Limit > 0 {
		fmt.Fprintf(&b, " (%d bytes, cap %d)", e.Size, e.Limit)
	}
	if e.Err != nil && !errors.Is(e.Err, ErrFrameTooLarge) {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if len(e.Quote) > 0 {
		q := e.Quote
		more := ""
		if e.Size > len(q) {
			more = "..."
		}
		fmt.Fprintf(&b, "; starts %q%s", q, more)
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *FrameError) Unwrap() error { return e.Err }
