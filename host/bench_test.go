package host_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/logsink"
)

// rawEnv makes the test binary act as the raw-pipe baseline peer: "echo"
// answers each stdin line with the same line; "stream" reads a count n and
// a line length, writes n lines of that length with one write each, then
// "done".
const rawEnv = "TPROXY_HOST_BENCH_RAW"

func init() {
	switch os.Getenv(rawEnv) {
	case "echo":
		rawEcho()
		os.Exit(0)
	case "stream":
		rawStream()
		os.Exit(0)
	}
}

func rawEcho() {
	r := bufio.NewReader(os.Stdin)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		if _, err := os.Stdout.Write(line); err != nil {
			return
		}
	}
}

func rawStream() {
	var n, size int
	if _, err := fmt.Fscan(os.Stdin, &n, &size); err != nil {
		os.Exit(2)
	}
	line := []byte(strings.Repeat("x", size-1) + "\n")
	for range n {
		if _, err := os.Stdout.Write(line); err != nil {
			os.Exit(1)
		}
	}
	os.Stdout.WriteString("done\n")
}

// rawPeer starts the baseline peer in mode.
func rawPeer(b *testing.B, mode string) (stdin io.WriteCloser, stdout *bufio.Reader, wait func()) {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := osexec.Command(exe)
	cmd.Env = append(os.Environ(), rawEnv+"="+mode)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	return in, bufio.NewReaderSize(out, 64<<10), func() {
		in.Close()
		if err := cmd.Wait(); err != nil {
			b.Errorf("raw peer: %v", err)
		}
	}
}

// tickLineSize is the length of one "tick" event notification on the wire,
// so the baseline moves lines of the same size.
func tickLineSize() int {
	msg := map[string]any{"jsonrpc": "2.0", "method": tproxy.MethodEvent, "params": tproxy.Event{
		Name: "tick", Timestamp: time.Now().UTC(), StepID: "stream", Data: map[string]any{"i": 123456},
	}}
	b, err := json.Marshal(msg)
	if err != nil {
		panic(err)
	}
	return len(b) + 1
}

// BenchmarkRawPipePingPong is the floor for BenchmarkPing: one line to a
// child process and the same line back, over plain pipes.
func BenchmarkRawPipePingPong(b *testing.B) {
	in, out, wait := rawPeer(b, "echo")
	defer wait()
	line := []byte(`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"data":"bench"}}` + "\n")
	for b.Loop() {
		if _, err := in.Write(line); err != nil {
			b.Fatal(err)
		}
		if _, err := out.ReadBytes('\n'); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPing is the protocol's round trip to a worker subprocess.
func BenchmarkPing(b *testing.B) {
	ctx := context.Background()
	c, err := host.Start(ctx, subprocess(nil))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for b.Loop() {
		if _, err := c.Ping(ctx, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawPipeStreamToFile is the floor for BenchmarkStreamEvents: a
// child process writes b.N lines of the event line's size, one write per
// line; the parent appends each line to a buffered file.
func BenchmarkRawPipeStreamToFile(b *testing.B) {
	size := tickLineSize()
	f, err := os.Create(filepath.Join(b.TempDir(), logsink.EventsFile))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fw := bufio.NewWriterSize(f, logsink.DefaultBufferSize)
	in, out, wait := rawPeer(b, "stream")
	defer wait()
	b.SetBytes(int64(size))
	b.ResetTimer()
	fmt.Fprintf(in, "%d %d\n", b.N, size)
	n := 0
	for {
		line, err := out.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		if string(line) == "done\n" {
			break
		}
		if _, err := fw.Write(line); err != nil {
			b.Fatal(err)
		}
		n++
	}
	if err := fw.Flush(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if n != b.N {
		b.Fatalf("got %d lines, want %d", n, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkStreamEvents streams b.N events from one step in a worker
// subprocess into events.jsonl; ExecStep returns once all are flushed.
func BenchmarkStreamEvents(b *testing.B) {
	ctx := context.Background()
	sink, err := logsink.OpenDir(b.TempDir(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	c, err := host.Start(ctx, subprocess(nil), host.WithSink(sink))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "stream", Driver: "emit"}}}
	if _, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: "bench", Manifest: m}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(tickLineSize()))
	b.ResetTimer()
	_, err = c.ExecStep(ctx, tproxy.ExecStepParams{StepID: "stream", Driver: "emit",
		Config: map[string]any{"events": b.N}})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	lines, err := countLines(filepath.Join(sink.Dir(), logsink.EventsFile))
	if err != nil {
		b.Fatal(err)
	}
	// The runtime adds session_initialized, step_start and step_complete.
	if want := b.N + 3; lines != want {
		b.Fatalf("events.jsonl has %d lines, want %d", lines, want)
	}
}

func countLines(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strings.Count(string(data), "\n"), nil
}
