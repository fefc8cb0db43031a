package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy/internal/e2bfake"
	"github.com/tproxy/tproxy/transport/e2b"
)

// TestSweep runs tproxy sweep against the local E2B: it must find only
// tproxy's sandboxes older than -older-than that carry every -tag, list
// them with -dry-run, and kill them without.
func TestSweep(t *testing.T) {
	srv, err := e2bfake.New(e2bfake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	t.Setenv("E2B_API_KEY", srv.APIKey())
	t.Setenv("E2B_API_URL", srv.URL)

	tagged := map[string]string{e2b.TagKey: e2b.TagValue}
	create := func(age time.Duration, meta map[string]string) string {
		t.Helper()
		id, err := srv.CreateSandbox("base", time.Hour, meta)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.SetStartedAt(id, time.Now().Add(-age)); err != nil {
			t.Fatal(err)
		}
		return id
	}
	oldA := create(3*time.Hour, map[string]string{e2b.TagKey: e2b.TagValue, "batch": "a"})
	oldB := create(2*time.Hour, map[string]string{e2b.TagKey: e2b.TagValue, "batch": "b"})
	young := create(time.Minute, tagged)
	foreign := create(5*time.Hour, map[string]string{"owner": "someone-else"})

	alive := func() []string { s := srv.Sandboxes(); slices.Sort(s); return s }
	want := func(ids ...string) []string { slices.Sort(ids); return ids }

	for _, tc := range []struct {
		name   string
		args   []string
		listed []string // in the output
		alive  []string // afterwards
		envURL string   // E2B_API_URL, if not srv.URL
	}{
		{"dry run", []string{"-dry-run", "-older-than", "1h"}, []string{oldA, oldB}, want(oldA, oldB, young, foreign), ""},
		// -e2b-api-url wins over E2B_API_URL, here an address where
		// nothing listens.
		{"URL by flag", []string{"-dry-run", "-older-than", "1h", "-e2b-api-url", srv.URL}, []string{oldA, oldB}, want(oldA, oldB, young, foreign), "http://127.0.0.1:1"},
		{"by tag", []string{"-older-than", "1h", "-tag", "batch=b"}, []string{oldB}, want(oldA, young, foreign), ""},
		{"by age", []string{"-older-than", "1h"}, []string{oldA}, want(young, foreign), ""},
		{"nothing left", []string{"-older-than", "1h"}, nil, want(young, foreign), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.envURL != "" {
				t.Setenv("E2B_API_URL", tc.envURL)
			}
			r := runT(t, false, append([]string{"sweep"}, tc.args...)...)
			if r.code != exitOK {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			for _, id := range tc.listed {
				if !strings.Contains(r.stdout, id) {
					t.Errorf("output does not name %s:\n%s", id, r.stdout)
				}
			}
			for _, id := range []string{young, foreign} {
				if strings.Contains(r.stdout, id) {
					t.Errorf("output names %s, which the sweep must not touch:\n%s", id, r.stdout)
				}
			}
			if got := alive(); !slices.Equal(got, tc.alive) {
				t.Errorf("sandboxes alive: %v; want %v", got, tc.alive)
			}
		})
	}
	r := runT(t, false, "sweep", "-dry-run")
	if !strings.Contains(r.stdout, "0 sandboxes older than 1h0m0s would be killed (dry run)") {
		t.Errorf("dry run with nothing to do: %q", r.stdout)
	}

	t.Run("no key", func(t *testing.T) {
		t.Setenv("E2B_API_KEY", "")
		r := runT(t, false, "sweep", "-dry-run")
		if r.code != exitUsage || !strings.Contains(r.stderr, "E2B_API_KEY") {
			t.Errorf("exit %d, stderr %q; want 2 and a word on E2B_API_KEY", r.code, r.stderr)
		}
	})
	t.Run("API failure", func(t *testing.T) {
		srv.FailNext(e2bfake.OpList, 500, 10)
		r := runT(t, false, "sweep", "-older-than", "1h")
		if r.code != exitFail || r.stderr == "" {
			t.Errorf("exit %d, stderr %q; want 1 and the error", r.code, r.stderr)
		}
	})
}
