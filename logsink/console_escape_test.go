package logsink_test

import (
	"context"
	"strings"
	"testing"
	"unicode"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
)

// hostileStrings are what a worker could put in a name, unit, key or
// value to act on the user's terminal: a screen clear, an OSC 52
// clipboard write, C1 CSI, DEL, a bidirectional override.
var hostileStrings = []string{
	"\x1b[2J",
	"\x1b]52;c;aGVsbG8=\x07",
	"\x1b]52;c;aGVsbG8=\x1b\\",
	"\u009b2J",
	"\x7f\x08",
	"\u202eevil",
	"\x00\r",
}

// TestConsoleEscapesControlCharacters: item 21 of issue 13. Nothing a
// worker sends reaches the terminal as a control character, wherever it
// sits in the record.
func TestConsoleEscapesControlCharacters(t *testing.T) {
	ctx := context.Background()
	for _, h := range hostileStrings {
		var b strings.Builder
		c := logsink.NewConsole(&b)
		c.Event(ctx, tproxy.Event{Name: "ev" + h, StepID: "s" + h, Data: map[string]any{
			"k" + h: "v" + h,
			"n":     map[string]any{"nested" + h: []any{"x" + h}},
			"b":     []byte(h),
			"u":     unprintable(h),
		}})
		c.Metric(ctx, tproxy.Metric{Name: "m" + h, Unit: "u" + h, StepID: "s" + h, Tags: map[string]string{"t" + h: "v" + h}})
		lines := strings.Split(b.String(), "\n")
		if len(lines) != 3 || lines[2] != "" {
			t.Errorf("%q: want 2 lines, got %q", h, b.String())
			continue
		}
		for _, line := range lines[:2] {
			for _, r := range line {
				if r != ' ' && !unicode.IsPrint(r) {
					t.Errorf("%q: %U reached the terminal raw:\n%q", h, r, line)
					break
				}
			}
		}
	}
}

// unprintable is a value JSON encodes as a string: its text is s.
type unprintable string

func TestConsoleEscapesShownReadably(t *testing.T) {
	var b strings.Builder
	c := logsink.NewConsole(&b)
	c.Event(context.Background(), tproxy.Event{Name: "clear\x1b[2J", Data: map[string]any{"n": map[string]any{"v": "\u009b2J\x7f"}}})
	c.Metric(context.Background(), tproxy.Metric{Name: "osc\x1b]52;c;aGk=\x07", Value: 1, Unit: "ms\x1b[31m"})
	want := "   📊 Event: \"clear\\x1b[2J\" n={\"v\":\"\\u009b2J\\u007f\"}\n" +
		"   📈 Metric: \"osc\\x1b]52;c;aGk=\\a\" = 1 \"ms\\x1b[31m\"\n"
	if got := b.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
