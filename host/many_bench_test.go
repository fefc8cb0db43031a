package host_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
)

// manyHostEnv makes TestManyHostChild run: the test binary is then the
// host process of BenchmarkRunMany, so that its peak RSS is the host's
// alone.
const manyHostEnv = "TPROXY_HOST_TEST_MANY_HOST"

// manyResult is what the child host reports.
type manyResult struct {
	Sessions, Parallelism int
	Wall                  time.Duration
	Events, Metrics       int64
	VmHWMKiB              int64 // peak RSS from /proc/self/status
	MaxrssKiB             int64 // getrusage(RUSAGE_SELF)
	Failed                int
}

// BenchmarkRunMany runs 100 sessions at once over worker subprocesses in a
// child host process and reports the wall time, the host's peak RSS (its
// own VmHWM; the workers are separate processes) and events/s overall.
// Each session: 500 events in one step, then a step writing an artifact.
//
//	go test -run '^$' -bench RunMany -benchtime 1x ./host
func BenchmarkRunMany(b *testing.B) {
	for _, c := range []struct{ sessions, parallelism int }{{100, 100}, {100, 10}} {
		b.Run(fmt.Sprintf("sessions=%d/parallel=%d", c.sessions, c.parallelism), func(b *testing.B) {
			var last manyResult
			for range b.N {
				last = runManyHost(b, c.sessions, c.parallelism)
			}
			b.ReportMetric(last.Wall.Seconds(), "wall-s")
			b.ReportMetric(float64(last.VmHWMKiB)/1024, "host-peak-RSS-MiB")
			b.ReportMetric(float64(last.Events)/last.Wall.Seconds(), "events/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func runManyHost(b *testing.B, sessions, parallelism int) manyResult {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := osexec.Command(exe, "-test.run", "^TestManyHostChild$", "-test.count", "1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%d,%s", manyHostEnv, sessions, parallelism, b.TempDir()))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("child host: %v\n%s%s", err, out, stderr.Bytes())
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "MANY "); ok {
			var r manyResult
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				b.Fatal(err)
			}
			if r.Failed != 0 {
				b.Fatalf("%d sessions failed", r.Failed)
			}
			return r
		}
	}
	b.Fatalf("the child host reported nothing:\n%s", out)
	return manyResult{}
}

// TestManyHostChild is the child host of BenchmarkRunMany; it is skipped
// unless manyHostEnv is set.
func TestManyHostChild(t *testing.T) {
	arg := os.Getenv(manyHostEnv)
	if arg == "" {
		t.Skip("the child host of BenchmarkRunMany")
	}
	var sessions, parallelism int
	var base string
	parts := strings.SplitN(arg, ",", 3)
	sessions, _ = strconv.Atoi(parts[0])
	parallelism, _ = strconv.Atoi(parts[1])
	base = parts[2]
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{
		{ID: "emit", Driver: "emit", Config: map[string]any{"events": 500}},
		{ID: "out", Driver: "files", Needs: []string{"emit"}, Config: map[string]any{"files": map[string]any{"out.txt": "done"}}},
	}}
	tr := fanoutWorker().Subprocess // untapped: the benchmark measures the host, not the tests' frame checks
	jobs := make([]host.Job, sessions)
	for i := range jobs {
		jobs[i] = host.Job{Transport: tr, Spec: host.RunSpec{Dir: filepath.Join(base, fmt.Sprint(i)), Manifest: m, Options: quiet()}}
	}
	sum, err := host.RunMany(t.Context(), jobs, parallelism)
	if err != nil {
		t.Fatal(err)
	}
	r := manyResult{Sessions: sessions, Parallelism: parallelism, Wall: sum.Wall, Events: sum.Events, Metrics: sum.Metrics,
		Failed: sum.Failed + sum.Cancelled, VmHWMKiB: vmHWM(t)}
	if kib, ok := maxRSSKiB(); ok {
		r.MaxrssKiB = kib
	}
	line, _ := json.Marshal(r)
	fmt.Printf("MANY %s\n", line)
}

// vmHWM is this process's peak resident set size, in KiB.
func vmHWM(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}
