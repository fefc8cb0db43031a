package tproxy_test

import (
	"errors"
	"strings"
	"testing"

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
