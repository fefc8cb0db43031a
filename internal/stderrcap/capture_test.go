package stderrcap

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("broken")
}

// TestStderrCapture: chunks split anywhere are kept in a bounded tail,
// copied to the writer, and logged line by line, Error from "panic:" on; a
// failing writer is dropped without failing the capture.
func TestStderrCapture(t *testing.T) {
	var logs, copyBuf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	c := New(16, &copyBuf, logger, slog.String("sandbox", "sb1"))
	for _, chunk := range []string{"hel", "lo\nwor", "ld\npanic: bo", "om\ntail"} {
		if n, err := c.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	c.Flush()
	if got := copyBuf.String(); got != "hello\nworld\npanic: boom\ntail" {
		t.Errorf("copy %q", got)
	}
	if got := c.Tail(); got != "panic: boom\ntail" {
		t.Errorf("tail %q, want the last 16 bytes cut at a line", got)
	}
	l := logs.String()
	for _, want := range []string{"level=INFO msg=hello sandbox=sb1", "level=INFO msg=world", `level=ERROR msg="panic: boom"`, "level=ERROR msg=tail"} {
		if !strings.Contains(l, want) {
			t.Errorf("logs lack %q:\n%s", want, l)
		}
	}

	fw := &failWriter{}
	c = New(0, fw, nil)
	c.Write([]byte("a"))
	c.Write([]byte("b"))
	if fw.n != 1 || c.Tail() != "ab" {
		t.Errorf("failing writer called %d times, tail %q", fw.n, c.Tail())
	}
}
