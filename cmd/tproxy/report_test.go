package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// reportOf writes the report of session dir and returns its path, its
// text, and the session read.
func reportOf(t testing.TB, dir string) (string, string, *session) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "report.html")
	s, err := readSession(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeReportFile(out, io.Discard, s); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return out, string(b), s
}

// external finds what would make a page reach past itself: a URL, a
// source or stylesheet attribute, a CSS import or url().
var external = regexp.MustCompile(`(?i)https?://|\bsrc\s*=|<link\b|@import|url\(|\bhref\s*=`)

// stepBar matches a step's bar in the timeline: its classes and step.
var stepBar = regexp.MustCompile(`class="bar step ([a-z_]+)(?: end| inside)?" data-kind="step-bar" data-step="([^"]*)"`)

// checkReport asserts what every report must hold, against the session's
// status.json: no external reference, one bar per step with the step's
// state as its class, the failure section exactly when the run failed,
// every artifact's hash.
func checkReport(t *testing.T, s *session, html string) {
	t.Helper()
	if m := external.FindString(html); m != "" {
		t.Errorf("the report is not self-contained: it holds %q", m)
	}
	bars := stepBar.FindAllStringSubmatch(html, -1)
	if len(bars) != len(s.status.Steps) {
		t.Fatalf("%d step bars for %d steps", len(bars), len(s.status.Steps))
	}
	for i, st := range s.status.Steps {
		if bars[i][2] != st.ID || bars[i][1] != cssClass(st.Status) {
			t.Errorf("bar %d is %q (%s); want %q (%s)", i, bars[i][2], bars[i][1], st.ID, st.Status)
		}
	}
	if f := s.status.Failure; f != nil {
		if !strings.Contains(html, `<section id="failure" class="failure" data-kind="`+f.Kind+`" data-step="`+f.StepID+`">`) {
			t.Errorf("the failure is not marked")
		}
	} else if strings.Contains(html, `id="failure"`) {
		t.Errorf("a failure section in the report of a successful run")
	}
	for _, st := range s.status.Steps {
		for _, a := range st.Artifacts {
			if !strings.Contains(html, a.SHA256) {
				t.Errorf("artifact %s/%s: no sha256 in the report", st.ID, a.Path)
			}
		}
	}
}

func TestReportFixtures(t *testing.T) {
	for _, name := range fixtures {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("testdata", "sessions", name)
			out := filepath.Join(t.TempDir(), "r.html")
			r := runT(t, false, "report", dir, "-o", out)
			if r.code != exitOK || !strings.Contains(r.stdout, "wrote "+out) {
				t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			s, err := readSession(dir)
			if err != nil {
				t.Fatal(err)
			}
			checkReport(t, s, string(b))
		})
	}
}

func TestReportStdout(t *testing.T) {
	r := runT(t, false, "report", "-o", "-", filepath.Join("testdata", "sessions", "pipeline-ok"))
	if r.code != exitOK || !strings.HasPrefix(r.stdout, "<!DOCTYPE html>") || !strings.HasSuffix(r.stdout, "</html>\n") {
		t.Errorf("exit %d, stdout begins %.40q", r.code, r.stdout)
	}
}

// The report of the 1,000,000-event session stays small: every kind is
// counted in full, at most eventsPerKind of each embedded.
func TestReportMillionEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 170 MB session; skipped with -short")
	}
	dir := millionSession(t)
	start := time.Now()
	_, html, s := reportOf(t, dir)
	t.Logf("report of %d events: %d bytes in %v", millionEvents, len(html), time.Since(start).Round(time.Millisecond))
	if len(html) >= maxReportBytes {
		t.Errorf("the report is %d bytes; the cap is %d", len(html), maxReportBytes)
	}
	checkReport(t, s, html)
	for _, want := range []string{
		"1000000 events in the session",
		// The batch events of the ingest step, all counted, 100 shown.
		"<tr><td>ingest</td><td>batch</td><td class=\"num\">499993</td><td class=\"num\">",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if n := strings.Count(html, `<tr data-step="ingest" data-name="batch"`); n == 0 || n > eventsPerKind {
		t.Errorf("%d ingest batch events embedded; want 1..%d", n, eventsPerKind)
	}
}

// BenchmarkReportMillionEvents measures what the report costs for the
// large fixture: reading the session and rendering the HTML. Run it with
// go test -run '^$' -bench ReportMillion -benchtime 1x ./cmd/tproxy.
func BenchmarkReportMillionEvents(b *testing.B) {
	dir := millionSession(b)
	var size int
	for b.Loop() {
		s, err := readSession(dir)
		if err != nil {
			b.Fatal(err)
		}
		var w countWriter
		if err := writeReport(&w, s); err != nil {
			b.Fatal(err)
		}
		size = int(w)
	}
	b.ReportMetric(float64(size), "report-bytes")
}

type countWriter int

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

func TestSampler(t *testing.T) {
	for _, tc := range []struct {
		n, max int
		want   []int
	}{
		{5, 10, []int{0, 1, 2, 3, 4}},
		{10, 10, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{11, 10, []int{0, 2, 4, 6, 8, 10}},
		{100, 10, []int{0, 16, 32, 48, 64, 80, 96}},
	} {
		s := sampler[int]{max: tc.max}
		for i := range tc.n {
			keep := s.want()
			s.add(keep, i)
		}
		if len(s.items) > tc.max || !slices.Equal(s.items, tc.want) {
			t.Errorf("sample of %d, max %d: %v; want %v", tc.n, tc.max, s.items, tc.want)
		}
	}
}
