package main

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The browser test renders reports in headless Chromium (Debian's
// chromium package; .ci/run installs it). Without it the test skips,
// unless requireChromiumEnv is 1, as CI sets it, so that a CI machine
// that lost the browser fails instead of passing quietly.
const (
	requireChromiumEnv = "TPROXY_REQUIRE_CHROMIUM"
	// artifactsEnv names a directory for the screenshots; default a
	// temporary one, removed after the test.
	artifactsEnv = "TPROXY_TEST_ARTIFACTS"
	// maxRenderMS bounds how long the browser takes to parse and script
	// the 1,000,000-event report, as the page itself measures it
	// (performance.now() when its script has run).
	maxRenderMS = 5000
)

func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv(requireChromiumEnv) == "1" {
		t.Fatalf("chromium is not installed, and %s=1 requires it", requireChromiumEnv)
	}
	t.Skipf("chromium is not installed (apt-get install chromium); %s=1 makes this a failure", requireChromiumEnv)
	return ""
}

// chromium runs headless Chromium on a page with a fresh profile and the
// flags that keep it off the network, and returns its stdout.
func chromium(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--window-size=1280,1500", "--hide-scrollbars"}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %q: %v\nstderr:\n%s", args, err, stderr.String())
	}
	return string(out)
}

var renderMS = regexp.MustCompile(`data-render-ms="(\d+)"`)

func TestBrowserReport(t *testing.T) {
	bin := chromiumPath(t)
	artifacts := os.Getenv(artifactsEnv)
	if artifacts == "" {
		artifacts = t.TempDir()
	} else if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, dir string }{
		{"pipeline-ok", filepath.Join("testdata", "sessions", "pipeline-ok")},
		{"pipeline-failed", filepath.Join("testdata", "sessions", "pipeline-failed")},
	}
	if !testing.Short() {
		cases = append(cases, struct{ name, dir string }{"million", millionSession(t)})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path, html, s := reportOf(t, tc.dir)
			if len(html) >= maxReportBytes {
				t.Errorf("report: %d bytes; the cap is %d", len(html), maxReportBytes)
			}
			page := (&url.URL{Scheme: "file", Path: path}).String()

			start := time.Now()
			dom := chromium(t, bin, "--dump-dom", page)
			wall := time.Since(start)
			// The DOM after the page's script ran: the timeline and the
			// failure are checked as the browser built them.
			checkReport(t, s, dom)
			m := renderMS.FindStringSubmatch(dom)
			if m == nil {
				t.Fatalf("the page's script did not run: no data-render-ms in the DOM")
			}
			ms, _ := strconv.Atoi(m[1])
			t.Logf("%s: %d bytes, rendered in %d ms (chromium's start included: %v)", tc.name, len(html), ms, wall.Round(time.Millisecond))
			if ms > maxRenderMS {
				t.Errorf("the page took %d ms to render; the bound is %d", ms, maxRenderMS)
			}

			shot := filepath.Join(artifacts, "report-"+tc.name+".png")
			chromium(t, bin, "--screenshot="+shot, page)
			if fi, err := os.Stat(shot); err != nil || fi.Size() == 0 {
				t.Errorf("no screenshot: %v", err)
			} else {
				t.Logf("screenshot: %s", shot)
			}
		})
	}

	// A filter in the link hides the other steps' events, in the browser.
	t.Run("filter", func(t *testing.T) {
		path, _, _ := reportOf(t, filepath.Join("testdata", "sessions", "pipeline-failed"))
		u := &url.URL{Scheme: "file", Path: path, Fragment: "step=transform"}
		dom := chromium(t, bin, "--dump-dom", u.String())
		rows := regexp.MustCompile(`<tr data-step="([^"]*)" data-name="[^"]*"[^>]*?( style="display: none;")?>`).FindAllStringSubmatch(dom, -1)
		if len(rows) == 0 {
			t.Fatal("no event rows in the DOM")
		}
		shown := 0
		for _, r := range rows {
			hidden := r[2] != ""
			if hidden == (r[1] == "transform") {
				t.Errorf("row of step %q: hidden %v", r[1], hidden)
			}
			if !hidden {
				shown++
			}
		}
		if !strings.Contains(dom, `<span class="muted" id="f-count">`+strconv.Itoa(shown)+` shown</span>`) {
			t.Errorf("the count does not say %d shown", shown)
		}
	})
}
