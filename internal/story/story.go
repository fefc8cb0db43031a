// Package story prints the seed prototype's story of a session — each
// command as it is sent, its response, the events and metrics streaming in
// between, and what the session directory holds — for the examples.
package story

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/logsink"
)

// Teller prints the story to W (os.Stdout when nil).
type Teller struct {
	W io.Writer
	// Timed adds each command's round trip to its response line.
	Timed bool
	// OnWorker, if set, is called after the handshake's response is
	// printed, with the worker's answer.
	OnWorker func(p *tproxy.PingResult)
}

func (t *Teller) w() io.Writer {
	if t.W == nil {
		return os.Stdout
	}
	return t.W
}

// Trace is a host.WithTrace function: it prints each command as it is sent
// and its response once it is answered. Artifact fetches are not part of
// the story.
func (t *Teller) Trace(method string, params any) func(any, error) {
	switch method {
	case tproxy.MethodPing:
		fmt.Fprintln(t.w(), "→ Sending PING...")
	case tproxy.MethodPrepare:
		fmt.Fprintln(t.w(), "→ Sending PREPARE...")
	case tproxy.MethodExecStep:
		p, _ := params.(tproxy.ExecStepParams)
		fmt.Fprintf(t.w(), "→ Sending EXEC_STEP for %s...\n", p.StepID)
	case tproxy.MethodCleanup:
		fmt.Fprintln(t.w(), "→ Sending CLEANUP...")
	default:
		return nil
	}
	start := time.Now()
	return func(res any, err error) {
		took := ""
		if t.Timed {
			took = fmt.Sprintf(" (%v)", Round(time.Since(start)))
		}
		if err != nil {
			fmt.Fprintf(t.w(), "   Error%s: %v\n\n", took, err)
			return
		}
		b, _ := json.Marshal(res)
		fmt.Fprintf(t.w(), "   Response%s: %s\n\n", took, b)
		if p, ok := res.(*tproxy.PingResult); ok && method == tproxy.MethodPing {
			if t.OnWorker != nil {
				t.OnWorker(p)
			}
		}
	}
}

// Round rounds d for display.
func Round(d time.Duration) time.Duration {
	if d > 10*time.Millisecond {
		return d.Round(time.Millisecond)
	}
	return d.Round(10 * time.Microsecond)
}

// Summarize prints what the session directory of st holds: the last
// events, every metric, and where the files are.
func (t *Teller) Summarize(st *host.Status) error {
	events, err := logsink.ReadLines(filepath.Join(st.Dir, logsink.EventsFile))
	if err != nil {
		return err
	}
	metrics, err := logsink.ReadLines(filepath.Join(st.Dir, logsink.MetricsFile))
	if err != nil {
		return err
	}
	if len(events) == 0 || len(metrics) == 0 {
		return errors.New("the session logs are empty")
	}
	w := t.w()
	fmt.Fprintln(w, "3️⃣ Collected logs:")
	fmt.Fprintf(w, "📊 Events (%d total), the last three:\n", len(events))
	for _, e := range events[max(0, len(events)-3):] {
		fmt.Fprintf(w, "   #%v %v %v\n", e["seq"], e["event"], stepOf(e))
	}
	fmt.Fprintf(w, "📈 Metrics (%d total):\n", len(metrics))
	for _, m := range metrics {
		unit := ""
		if u, ok := m["unit"]; ok {
			unit = fmt.Sprint(" ", u)
		}
		fmt.Fprintf(w, "   %v = %v%s %v\n", m["metric"], m["value"], unit, stepOf(m))
	}
	fmt.Fprintf(w, "📁 Session directory: %s\n   %s, %s, %s, %s/\n", st.Dir,
		logsink.EventsFile, logsink.MetricsFile, host.StatusFile, host.ArtifactsDir)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "✅ Completed successfully!")
	return nil
}

func stepOf(line map[string]any) string {
	if s, ok := line["step_id"]; ok {
		return fmt.Sprintf("(step %v)", s)
	}
	return ""
}

// PrefixWriter writes each complete line written to it to W (os.Stderr
// when nil), after Prefix: the worker's stderr, indented and marked.
type PrefixWriter struct {
	W       io.Writer
	Prefix  string
	mu      sync.Mutex
	partial []byte
}

// Write implements io.Writer.
func (p *PrefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.W
	if w == nil {
		w = os.Stderr
	}
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			return len(b), nil
		}
		fmt.Fprintf(w, "%s%s\n", p.Prefix, strings.TrimRight(string(p.partial[:i]), "\r"))
		p.partial = p.partial[i+1:]
	}
}
