package stderrcap

import (
	"testing"
)

func TestTrimTail(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		truncated bool
		want      string
	}{
		{"whole stream is kept as is", "partial\nline\n", false, "partial\nline\n"},
		{"cut to the first line boundary", "tial\nnext line\nlast\n", true, "next line\nlast\n"},
		{"boundary too late: keep the long line", "a very long last line that matters\n", true, "a very long last line that matters\n"},
		{"no boundary", "just some text", true, "just some text"},
		{"cut inside a rune", "\xa9\xc3\xa9t\xc3\xa9 long enough", true, "\xc3\xa9t\xc3\xa9 long enough"},
		{"empty", "", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := trimTail([]byte(tt.in), tt.truncated); got != tt.want {
				t.Errorf("TrimTail(%q, %v) = %q, want %q", tt.in, tt.truncated, got, tt.want)
			}
		})
	}
}
