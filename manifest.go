package tproxy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// ManifestError reports a manifest that cannot run, naming the step at
// fault when there is one.
type ManifestError struct {
	// StepID is the step at fault, or "" for the manifest as a whole.
	StepID string
	// Reason says what is wrong.
	Reason string
}

// Error names the step and the reason.
func (e *ManifestError) Error() string {
	if e.StepID == "" {
		return "tproxy: invalid manifest: " + e.Reason
	}
	return fmt.Sprintf("tproxy: invalid manifest: step %q: %s", e.StepID, e.Reason)
}

// Validate checks that m can run: at least one step, valid and unique step
// ids, a driver named for each step, needs that name other steps of m
// without a cycle, and inputs that come from a step the consumer needs
// (directly or transitively) so that it has run by then. The error is a
// *ManifestError naming the first step at fault in manifest order.
func (m Manifest) Validate() error {
	_, err := m.Order()
	return err
}

// Order returns m's steps in an order that respects needs: a topological
// order that keeps manifest order among steps free to run, so that a
// linear manifest runs as written. It validates m as Validate does.
func (m Manifest) Order() ([]StepSpec, error) {
	if len(m.Steps) == 0 {
		return nil, &ManifestError{Reason: "no steps"}
	}
	index := make(map[string]int, len(m.Steps))
	for i, st := range m.Steps {
		if err := ValidateID("step id", st.ID); err != nil {
			return nil, &ManifestError{StepID: st.ID, Reason: fmt.Sprintf("step %d: %v", i, err)}
		}
		if _, dup := index[st.ID]; dup {
			return nil, &ManifestError{StepID: st.ID, Reason: "the id appears more than once"}
		}
		index[st.ID] = i
	}
	for _, st := range m.Steps {
		if st.Driver == "" {
			return nil, &ManifestError{StepID: st.ID, Reason: "no driver named"}
		}
		for _, n := range st.Needs {
			if _, ok := index[n]; !ok {
				return nil, &ManifestError{StepID: st.ID, Reason: fmt.Sprintf("needs %q, which is not a step of the manifest", n)}
			}
			if n == st.ID {
				return nil, &ManifestError{StepID: st.ID, Reason: "needs itself"}
			}
		}
	}
	if cycle := findCycle(m.Steps, index); cycle != nil {
		return nil, &ManifestError{StepID: cycle[0], Reason: "dependency cycle (each needs the next): " + strings.Join(cycle, " → ")}
	}

	// Kahn's algorithm, always taking the earliest ready step.
	indeg := make([]int, len(m.Steps))
	for i, st := range m.Steps {
		indeg[i] = len(uniq(st.Needs))
	}
	done := make([]bool, len(m.Steps))
	order := make([]StepSpec, 0, len(m.Steps))
	for len(order) < len(m.Steps) {
		next := -1
		for i := range m.Steps {
			if !done[i] && indeg[i] == 0 {
				next = i
				break
			}
		}
		done[next] = true
		order = append(order, m.Steps[next])
		for i, st := range m.Steps {
			if slices.Contains(st.Needs, m.Steps[next].ID) {
				indeg[i]--
			}
		}
	}

	// An input must come from a step that has run: one the consumer needs.
	for _, st := range m.Steps {
		anc := ancestors(m.Steps, index, st.ID)
		for _, name := range slices.Sorted(maps.Keys(st.Inputs)) {
			ref := st.Inputs[name]
			switch _, known := index[ref.FromStep]; {
			case ref.FromStep == "" || ref.Key == "":
				return nil, &ManifestError{StepID: st.ID, Reason: fmt.Sprintf("input %q needs both from_step and key", name)}
			case !known:
				return nil, &ManifestError{StepID: st.ID, Reason: fmt.Sprintf("input %q comes from step %q, which is not a step of the manifest", name, ref.FromStep)}
			case !anc[ref.FromStep]:
				return nil, &ManifestError{StepID: st.ID, Reason: fmt.Sprintf("input %q comes from step %q, which has not run by then: add %q to needs", name, ref.FromStep, ref.FromStep)}
			}
		}
	}
	return order, nil
}

func uniq(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// findCycle returns the ids of a dependency cycle, first id repeated at the
// end, or nil.
func findCycle(steps []StepSpec, index map[string]int) []string {
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(steps))
	var stack []string
	var cycle []string
	var visit func(i int) bool
	visit = func(i int) bool {
		color[i] = grey
		stack = append(stack, steps[i].ID)
		for _, n := range steps[i].Needs {
			j := index[n]
			switch color[j] {
			case grey:
				at := slices.Index(stack, n)
				cycle = append(slices.Clone(stack[at:]), n)
				return true
			case white:
				if visit(j) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = black
		return false
	}
	for i := range steps {
		if color[i] == white && visit(i) {
			return cycle
		}
	}
	return nil
}

// ancestors returns the steps id needs, directly or transitively.
func ancestors(steps []StepSpec, index map[string]int, id string) map[string]bool {
	seen := map[string]bool{}
	var walk func(string)
	walk = func(s string) {
		for _, n := range steps[index[s]].Needs {
			if !seen[n] {
				seen[n] = true
				walk(n)
			}
		}
	}
	walk(id)
	return seen
}
