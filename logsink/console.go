package logsink

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/tproxy/tproxy"
)

// DefaultConsolePrefix starts every Console line, indenting records under
// the host's own progress lines.
const DefaultConsolePrefix = "   "

// Console is a Sink that prints one human-readable line per record, for
// watching a run live:
//
//	📊 Event: step_complete step=extract duration_ms=12 rows=42
//	📈 Metric: rows_processed = 42 rows step=extract table=users
//
// An event line is the name, then step=<StepID> if set, then the data
// fields sorted by key; a metric line is name = value, then the unit, then
// step=<StepID>, then the tags sorted by key. A data field or tag named
// "step" is shown as "data.step". Strings — names, units, step ids, keys
// and values alike — are shown bare when they are one plain word and
// Go-quoted otherwise; other values as compact JSON, or as the string %v
// gives when JSON cannot encode them. Timestamps are not shown.
//
// Everything but the prefix comes from the worker, so nothing reaches the
// terminal raw that it could take for a command: control characters (C0,
// C1, DEL, and with them every escape sequence), and any other character
// that is not printable (bidirectional overrides, zero-width characters),
// are written as Go or JSON escapes.
//
// Console is safe for concurrent use; each record is one Write to the
// writer. Its methods ignore ctx.
type Console struct {
	// Prefix starts every line; NewConsole sets DefaultConsolePrefix. Set
	// it before first use.
	Prefix string

	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

var _ Sink = (*Console)(nil)

// NewConsole returns a Console writing to w.
func NewConsole(w io.Writer) *Console {
	return &Console{Prefix: DefaultConsolePrefix, w: w}
}

// Event prints e.
func (c *Console) Event(_ context.Context, e tproxy.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(append(c.buf[:0], c.Prefix...), "📊 Event: "...)
	c.buf = appendWord(c.buf, e.Name)
	c.buf = appendDetails(c.buf, e.StepID, e.Data)
	return c.write()
}

// appendDetails appends a record's step, when it has one, and its fields
// in key order.
func appendDetails(b []byte, stepID string, fields map[string]any) []byte {
	if stepID != "" {
		b = appendPair(b, "step", stepID)
	}
	for _, k := range consoleKeys(fields) {
		b = appendPair(b, consoleName(k), fields[k])
	}
	return b
}

// Log prints r, with its level.
func (c *Console) Log(_ context.Context, r tproxy.LogRecord) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(append(c.buf[:0], c.Prefix...), "📝 "...)
	c.buf = appendWord(c.buf, r.Level)
	c.buf = append(c.buf, ": "...)
	c.buf = appendWord(c.buf, r.Message)
	c.buf = appendDetails(c.buf, r.StepID, r.Attrs)
	return c.write()
}

// Metric prints m.
func (c *Console) Metric(_ context.Context, m tproxy.Metric) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(append(c.buf[:0], c.Prefix...), "📈 Metric: "...)
	c.buf = appendWord(c.buf, m.Name)
	c.buf = append(c.buf, " = "...)
	c.buf = strconv.AppendFloat(c.buf, m.Value, 'g', -1, 64)
	if m.Unit != "" {
		c.buf = appendWord(append(c.buf, ' '), m.Unit)
	}
	if m.StepID != "" {
		c.buf = appendPair(c.buf, "step", m.StepID)
	}
	for _, k := range consoleKeys(m.Tags) {
		c.buf = appendPair(c.buf, consoleName(k), m.Tags[k])
	}
	return c.write()
}

// Flush flushes the writer if it has a Flush() error method (as
// *bufio.Writer has), and otherwise does nothing.
func (c *Console) Flush() error {
	f, ok := c.w.(interface{ Flush() error })
	if !ok {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := f.Flush(); err != nil {
		return fmt.Errorf("logsink: console: %w", err)
	}
	return nil
}

func (c *Console) write() error {
	c.buf = append(c.buf, '\n')
	if _, err := c.w.Write(c.buf); err != nil {
		return fmt.Errorf("logsink: console: %w", err)
	}
	return nil
}

func consoleKeys[V any](m map[string]V) []string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return strings.Compare(consoleName(a), consoleName(b)) })
	return keys
}

func consoleName(k string) string {
	if k == "step" {
		return "data.step"
	}
	return k
}

func appendPair(b []byte, k string, v any) []byte {
	b = append(b, ' ')
	b = appendWord(b, k)
	b = append(b, '=')
	switch v := v.(type) {
	case string:
		return appendWord(b, v)
	case nil:
		return append(b, "null"...)
	}
	if j, err := json.Marshal(v); err == nil {
		return appendPrintableJSON(b, j)
	}
	return appendWord(b, fmt.Sprint(v))
}

// appendPrintableJSON appends the JSON text j with every rune that is not
// printable written as a \u escape. encoding/json escapes C0 controls but
// writes DEL, C1 controls and the like as they are; in its compact output
// they can only be inside strings, where the escape means the same.
func appendPrintableJSON(b, j []byte) []byte {
	const hexd = "0123456789abcdef"
	u := func(b []byte, r rune) []byte {
		return append(b, '\\', 'u', hexd[r>>12&0xf], hexd[r>>8&0xf], hexd[r>>4&0xf], hexd[r&0xf])
	}
	for i := 0; i < len(j); {
		r, size := utf8.DecodeRune(j[i:])
		switch {
		case r == ' ' || unicode.IsPrint(r) && !(r == utf8.RuneError && size == 1):
			b = append(b, j[i:i+size]...)
		case r >= 0x10000:
			r -= 0x10000
			b = u(u(b, 0xd800+r>>10&0x3ff), 0xdc00+r&0x3ff)
		default:
			b = u(b, r)
		}
		i += size
	}
	return b
}

// appendWord appends s bare if it reads as one word, quoted otherwise.
func appendWord(b []byte, s string) []byte {
	if plainWord(s) {
		return append(b, s...)
	}
	return strconv.AppendQuote(b, s)
}

func plainWord(s string) bool {
	if s == "" || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r == '"' || r == '=' || r == '\\' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
