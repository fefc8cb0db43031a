package tproxy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tproxy/tproxy"
)

func step(id string, needs ...string) tproxy.StepSpec {
	return tproxy.StepSpec{ID: id, Driver: "d", Needs: needs}
}

func TestManifestOrder(t *testing.T) {
	tests := []struct {
		name  string
		steps []tproxy.StepSpec
		want  string
	}{
		{"linear keeps manifest order", []tproxy.StepSpec{step("a"), step("b", "a"), step("c", "b")}, "a b c"},
		{"independent steps keep manifest order", []tproxy.StepSpec{step("z"), step("y"), step("x")}, "z y x"},
		{"needs reorder", []tproxy.StepSpec{step("load", "transform"), step("transform", "extract"), step("extract")}, "extract transform load"},
		{"diamond", []tproxy.StepSpec{step("d", "b", "c"), step("c", "a"), step("b", "a"), step("a")}, "a c b d"},
		{"duplicate need is one edge", []tproxy.StepSpec{step("a"), step("b", "a", "a")}, "a b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			order, err := tproxy.Manifest{Steps: tt.steps}.Order()
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, s := range order {
				ids = append(ids, s.ID)
			}
			if got := strings.Join(ids, " "); got != tt.want {
				t.Errorf("order = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestManifestValidateErrors(t *testing.T) {
	in := func(from string) map[string]tproxy.InputRef {
		return map[string]tproxy.InputRef{"rows": {FromStep: from, Key: "rows"}}
	}
	tests := []struct {
		name     string
		steps    []tproxy.StepSpec
		wantStep string
		wantIn   string
	}{
		{"empty", nil, "", "no steps"},
		{"duplicate id", []tproxy.StepSpec{step("a"), step("b"), step("a")}, "a", "more than once"},
		{"bad id", []tproxy.StepSpec{step("../etc")}, "../etc", "not allowed"},
		{"no driver", []tproxy.StepSpec{{ID: "a"}}, "a", "no driver"},
		{"unknown need", []tproxy.StepSpec{step("a", "ghost")}, "a", `needs "ghost"`},
		{"self need", []tproxy.StepSpec{step("a", "a")}, "a", "needs itself"},
		{"cycle", []tproxy.StepSpec{step("a", "c"), step("b", "a"), step("c", "b")}, "a", "a → c → b → a"},
		{"negative timeout", []tproxy.StepSpec{{ID: "a", Driver: "d", Timeout: -time.Second}}, "a", "timeout -1s is negative"},
		{"too many attempts", []tproxy.StepSpec{{ID: "a", Driver: "d", Retry: &tproxy.Retry{Attempts: 101}}}, "a", "retry.attempts 101"},
		{"negative backoff", []tproxy.StepSpec{{ID: "a", Driver: "d", Retry: &tproxy.Retry{Attempts: 2, Backoff: -1}}}, "a", "retry.backoff"},
		{"empty retry kind", []tproxy.StepSpec{{ID: "a", Driver: "d", Retry: &tproxy.Retry{Attempts: 2, On: []string{""}}}}, "a", "empty error type"},
		{"input from unknown step", []tproxy.StepSpec{step("a"), {ID: "b", Driver: "d", Needs: []string{"a"}, Inputs: in("ghost")}}, "b", `step "ghost", which is not a step`},
		{"input from a step not needed", []tproxy.StepSpec{step("a"), {ID: "b", Driver: "d", Inputs: in("a")}}, "b", "has not run by then"},
		{"input from a later step", []tproxy.StepSpec{{ID: "a", Driver: "d", Inputs: in("b")}, step("b", "a")}, "a", "has not run by then"},
		{"input without key", []tproxy.StepSpec{step("a"), {ID: "b", Driver: "d", Needs: []string{"a"},
			Inputs: map[string]tproxy.InputRef{"x": {FromStep: "a"}}}}, "b", "from_step and key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tproxy.Manifest{Steps: tt.steps}.Validate()
			var me *tproxy.ManifestError
			if !errors.As(err, &me) {
				t.Fatalf("Validate() = %v, want a *ManifestError", err)
			}
			if me.StepID != tt.wantStep || !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("Validate() = %q (step %q), want step %q and %q", err, me.StepID, tt.wantStep, tt.wantIn)
			}
		})
	}
}

func TestManifestTransitiveInput(t *testing.T) {
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{step("a"), step("b", "a"),
		{ID: "c", Driver: "d", Needs: []string{"b"}, Inputs: map[string]tproxy.InputRef{"rows": {FromStep: "a", Key: "rows"}}}}}
	if err := m.Validate(); err != nil {
		t.Errorf("an input from a transitive need was refused: %v", err)
	}
}

// bigManifests are the shapes of issue 13 item 4: a 10,000-step chain,
// and 2,000 steps that each need all earlier ones, each reading an input
// from the step before.
func bigManifests() map[string]tproxy.Manifest {
	chain := make([]tproxy.StepSpec, tproxy.MaxManifestSteps)
	for i := range chain {
		chain[i] = tproxy.StepSpec{ID: fmt.Sprintf("s%d", i), Driver: "d"}
		if i > 0 {
			chain[i].Needs = []string{chain[i-1].ID}
			chain[i].Inputs = map[string]tproxy.InputRef{"in": {FromStep: chain[i-1].ID, Key: "k"}}
		}
	}
	dense := make([]tproxy.StepSpec, 2000)
	for i := range dense {
		dense[i] = tproxy.StepSpec{ID: fmt.Sprintf("s%d", i), Driver: "d"}
		for j := range i {
			dense[i].Needs = append(dense[i].Needs, dense[j].ID)
		}
		if i > 0 {
			dense[i].Inputs = map[string]tproxy.InputRef{"in": {FromStep: dense[0].ID, Key: "k"}}
		}
	}
	// Listed last to first: the order is the reverse of the manifest's.
	slices.Reverse(chain)
	return map[string]tproxy.Manifest{"chain": {Steps: chain}, "dense": {Steps: dense}}
}

// TestManifestOrderLarge: the big shapes are ordered correctly (their
// cost is BenchmarkManifestOrder's), and a manifest over the limits is
// refused.
func TestManifestOrderLarge(t *testing.T) {
	for name, m := range bigManifests() {
		order, err := m.Order()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i, st := range order {
			if st.ID != fmt.Sprintf("s%d", i) {
				t.Fatalf("%s: step %d is %s", name, i, st.ID)
			}
		}
	}
	over := tproxy.Manifest{Steps: make([]tproxy.StepSpec, tproxy.MaxManifestSteps+1)}
	var me *tproxy.ManifestError
	if _, err := over.Order(); !errors.As(err, &me) || !strings.Contains(err.Error(), "over the limit") {
		t.Errorf("a manifest over MaxManifestSteps: %v", err)
	}
}

func BenchmarkManifestOrder(b *testing.B) {
	for name, m := range bigManifests() {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := m.Order(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestStepPolicyJSON checks that a step's Timeout and Retry.Backoff read
// and write as duration strings, and that a malformed one names the field.
func TestStepPolicyJSON(t *testing.T) {
	in := `{"id":"load","driver":"sql","timeout":"1m30s","retry":{"attempts":3,"backoff":"250ms","on":["transient","timeout"]}}`
	var st tproxy.StepSpec
	if err := json.Unmarshal([]byte(in), &st); err != nil {
		t.Fatal(err)
	}
	want := tproxy.StepSpec{ID: "load", Driver: "sql", Timeout: 90 * time.Second,
		Retry: &tproxy.Retry{Attempts: 3, Backoff: 250 * time.Millisecond, On: []string{"transient", "timeout"}}}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Fatalf("decoded (-want +got):\n%s", diff)
	}
	out, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back tproxy.StepSpec
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, back); diff != "" {
		t.Fatalf("round trip through %s (-want +got):\n%s", out, diff)
	}
	if plain, _ := json.Marshal(tproxy.StepSpec{ID: "a", Driver: "d"}); string(plain) != `{"id":"a","driver":"d"}` {
		t.Errorf("a step without policy encodes as %s", plain)
	}
	for _, bad := range []struct{ in, field string }{
		{`{"id":"a","driver":"d","timeout":"soon"}`, "timeout"},
		{`{"id":"a","driver":"d","retry":{"attempts":2,"backoff":"10"}}`, "retry.backoff"},
	} {
		err := json.Unmarshal([]byte(bad.in), &st)
		if err == nil || !strings.Contains(err.Error(), bad.field+": ") {
			t.Errorf("%s: err = %v, want one naming %s", bad.in, err, bad.field)
		}
	}
}
