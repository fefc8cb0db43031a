//go:build unix

package worker

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/mask"
)

// syncBuffer is a bytes.Buffer for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const stderrSecret = "SecretValue12345"

func stderrMasker(t *testing.T) *mask.Masker {
	t.Helper()
	m, err := mask.NewMasker(tproxy.Secrets{})
	if err != nil {
		t.Fatal(err)
	}
	m.Config(map[string]any{"password": stderrSecret, "token": `quo"ted\secret`})
	return m
}

// write is one write to stderr, after a pause.
type write struct {
	pause time.Duration
	data  string
}

// longLine is a 100 KiB line with the secret at the 32 KiB boundary the
// old filter flushed at, and elsewhere, raw and quoted.
var longLine = func() string {
	var b strings.Builder
	b.WriteString(strings.Repeat("x", 32<<10-5))
	b.WriteString(stderrSecret)
	for b.Len() < 100<<10 {
		b.WriteString(strings.Repeat("y", 1000))
		b.WriteString(stderrSecret)
		b.WriteString(` "quo\"ted\\secret" `)
	}
	return b.String() + "\n"
}()

// split cuts s into writes of size n with a pause before each.
func split(s string, n int, pause time.Duration) []write {
	var ws []write
	for len(s) > 0 {
		k := min(n, len(s))
		ws = append(ws, write{pause, s[:k]})
		s = s[k:]
	}
	return ws
}

// TestMaskCopyMasksSecretSplitAcrossWrites: item 12 of issue 13. The old
// filter let a partial line go after 50 ms, and a line at 32 KiB, which
// left "ecretValue12345" in stderr_tail. Now no timing and no line length
// lets a secret through: what comes out is what masking the whole stream
// at once gives, and at every moment a prefix of it.
func TestMaskCopyMasksSecretSplitAcrossWrites(t *testing.T) {
	tests := []struct {
		name   string
		writes []write
	}{
		{"split 60 ms apart", []write{{0, "connecting with S"}, {60 * time.Millisecond, "ecretValue12345 now\n"}}},
		{"split an hour apart", []write{{0, "connecting with Secret"}, {time.Hour, "Value12345 now\n"}}},
		{"byte by byte, a second apart", split("pw=SecretValue12345; q=\"quo\\\"ted\\\\secret\"\n", 1, time.Second)},
		{"100 KiB line in one write", []write{{0, longLine}}},
		{"100 KiB line in odd pieces", split(longLine, 4093, 100*time.Millisecond)},
		{"no newline ever", []write{{0, "tail SecretVal"}, {time.Minute, "ue12345"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := stderrMasker(t)
				var all strings.Builder
				for _, w := range tt.writes {
					all.WriteString(w.data)
				}
				want := m.String(all.String())

				pr, pw := io.Pipe()
				var out syncBuffer
				done := make(chan struct{})
				go func() {
					defer close(done)
					maskCopy(&out, pr, func() *mask.Masker { return m })
				}()
				for _, w := range tt.writes {
					time.Sleep(w.pause)
					if _, err := pw.Write([]byte(w.data)); err != nil {
						t.Fatal(err)
					}
					synctest.Wait()
					if got := out.String(); !strings.HasPrefix(want, got) {
						t.Fatalf("after writing %q, stderr is %q: not a prefix of the masked stream", w.data, got)
					}
				}
				pw.Close()
				<-done
				got := out.String()
				if got != want {
					t.Errorf("stderr = %.200q..., want %.200q...", got, want)
				}
				if strings.Contains(got, "ecretValue") || strings.Contains(got, `ted\\secret`) {
					t.Errorf("a secret, or the end of one, reached stderr")
				}
			})
		})
	}
}

// TestMaskCopyHoldsBackOnlyAPossibleSecret: between writes, the filter
// holds only bytes that could begin a secret, so output that holds none
// is never delayed; and what it holds is bounded by the longest form.
func TestMaskCopyHoldsBackOnlyAPossibleSecret(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := stderrMasker(t)
		pr, pw := io.Pipe()
		var out syncBuffer
		done := make(chan struct{})
		go func() {
			defer close(done)
			maskCopy(&out, pr, func() *mask.Masker { return m })
		}()
		sent := ""
		for _, tc := range []struct{ data, held string }{
			{"Password: ", ""},
			{"progress 45%", ""},
			{strings.Repeat("z", 1<<20), ""},
			{" Secret", "Secret"},
			{"Value1234", "SecretValue1234"},
			{"6", ""},
		} {
			pw.Write([]byte(tc.data))
			sent += tc.data
			synctest.Wait()
			time.Sleep(time.Hour) // no timer lets a held byte go
			synctest.Wait()
			if got, want := len(out.String()), len(sent)-len(tc.held); got != want {
				t.Fatalf("after %.20q: %d bytes out, want %d (holding %q)", tc.data, got, want, tc.held)
			}
		}
		pw.Close()
		<-done
		if got := out.String(); !strings.HasSuffix(got, " SecretValue12346") {
			t.Errorf("stderr ends %q: what was held was not let go once it could not be a secret", got[len(got)-30:])
		}
	})
}

// TestMaskCopyFollowsTheMasker: a secret learned after the filter
// started (a step's config) is masked from then on, including in bytes
// held back under the old masker.
func TestMaskCopyFollowsTheMasker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var cur atomicMasker
		m1 := stderrMasker(t)
		cur.set(m1)
		pr, pw := io.Pipe()
		var out syncBuffer
		done := make(chan struct{})
		go func() {
			defer close(done)
			maskCopy(&out, pr, cur.get)
		}()
		pw.Write([]byte("a SecretValue12345 b new-secret-one c Secret"))
		synctest.Wait()
		m2 := stderrMasker(t)
		m2.AddValues("new-secret-one", "SecretValue12345 again")
		cur.set(m2)
		pw.Write([]byte("Value12345 again new-secret-one\n"))
		pw.Close()
		<-done
		want := "a " + tproxy.Masked + " b new-secret-one c " + tproxy.Masked + " " + tproxy.Masked + "\n"
		if got := out.String(); got != want {
			t.Errorf("stderr = %q, want %q", got, want)
		}
	})
}

type atomicMasker struct {
	mu sync.Mutex
	m  *mask.Masker
}

func (a *atomicMasker) set(m *mask.Masker) { a.mu.Lock(); a.m = m; a.mu.Unlock() }
func (a *atomicMasker) get() *mask.Masker  { a.mu.Lock(); defer a.mu.Unlock(); return a.m }
