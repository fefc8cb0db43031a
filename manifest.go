package tproxy

import (
	"container/heap"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tproxy/tproxy/internal/check"
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
	switch {
	case len(m.Steps) == 0:
		return nil, &ManifestError{Reason: "no steps"}
	case len(m.Steps) > MaxManifestSteps:
		return nil, &ManifestError{Reason: fmt.Sprintf("%d steps, over the limit of %d", len(m.Steps), MaxManifestSteps)}
	}
	index := make(map[string]int, len(m.Steps))
	for i, st := range m.Steps {
		if err := check.ID("step id", st.ID); err != nil {
			return nil, &ManifestError{StepID: st.ID, Reason: fmt.Sprintf("step %d: %v", i, err)}
		}
		if _, dup := index[st.ID]; dup {
			return nil, &ManifestError{StepID: st.ID, Reason: "the id appears more than once"}
		}
		index[st.ID] = i
	}
	needs := make([][]int, len(m.Steps)) // distinct indices
	total := 0
	for i, st := range m.Steps {
		if st.Driver == "" {
			return nil, &ManifestError{StepID: st.ID, Reason: "no driver named"}
		}
		if reason := checkPolicy(st); reason != "" {
			return nil, &ManifestError{StepID: st.ID, Reason: reason}
		}
		if total += len(st.Needs); total > MaxManifestNeeds {
			return nil, &ManifestError{Reason: fmt.Sprintf("more than %d needs in all", MaxManifestNeeds)}
		}
		for _, n := range st.Needs {
			j, ok := index[n]
			if !ok {
				return nil, &ManifestError{StepID: st.ID, Reason: fmt.Sprintf("needs %q, which is not a step of the manifest", n)}
			}
			if n == st.ID {
				return nil, &ManifestError{StepID: st.ID, Reason: "needs itself"}
			}
			needs[i] = append(needs[i], j)
		}
		slices.Sort(needs[i])
		needs[i] = slices.Compact(needs[i])
	}
	if cycle := findCycle(m.Steps, index); cycle != nil {
		return nil, &ManifestError{StepID: cycle[0], Reason: "dependency cycle (each needs the next): " + strings.Join(cycle, " → ")}
	}
	order := kahn(needs)

	// An input must come from a step that has run: one the consumer needs.
	var anc []bitset
	for i, st := range m.Steps {
		for _, name := range slices.Sorted(maps.Keys(st.Inputs)) {
			ref := st.Inputs[name]
			from, known := index[ref.FromStep]
			switch {
			case ref.FromStep == "" || ref.Key == "":
				return nil, &ManifestError{StepID: st.ID, Reason: fmt.Sprintf("input %q needs both from_step and key", name)}
			case !known:
				return nil, &ManifestError{StepID: st.ID, Reason: fmt.Sprintf("input %q comes from step %q, which is not a step of the manifest", name, ref.FromStep)}
			}
			if anc == nil {
				anc = ancestors(needs, order)
			}
			if !anc[i].has(from) {
				return nil, &ManifestError{StepID: st.ID, Reason: fmt.Sprintf("input %q comes from step %q, which has not run by then: add %q to needs", name, ref.FromStep, ref.FromStep)}
			}
		}
	}
	out := make([]StepSpec, len(order))
	for i, j := range order {
		out[i] = m.Steps[j]
	}
	return out, nil
}

// checkPolicy returns what is wrong with st's Timeout and Retry, or "".
func checkPolicy(st StepSpec) string {
	switch r := st.Retry; {
	case st.Timeout < 0:
		return fmt.Sprintf("timeout %v is negative", st.Timeout)
	case r == nil:
	case r.Attempts < 0 || r.Attempts > maxAttempts:
		return fmt.Sprintf("retry.attempts %d is not between 0 and %d", r.Attempts, maxAttempts)
	case r.Backoff < 0:
		return fmt.Sprintf("retry.backoff %v is negative", r.Backoff)
	case slices.Contains(r.On, ""):
		return "retry.on names an empty error type"
	}
	return ""
}

// Limits of a manifest, so that validating one stays cheap: Order takes
// O((steps + needs) log steps) time, and steps² bits of memory when steps
// have inputs.
const (
	// MaxManifestSteps is the most steps a manifest may have.
	MaxManifestSteps = 10000
	// MaxManifestNeeds is the most needs a manifest's steps may list in all.
	MaxManifestNeeds = 4000000
)

// kahn returns the indices of the steps in topological order, always
// taking the earliest ready step, so that a linear manifest runs as
// written. needs[i] are the distinct indices step i needs; the graph has
// no cycle.
func kahn(needs [][]int) []int {
	indeg := make([]int, len(needs))
	users := make([][]int, len(needs)) // users[j]: the steps that need j
	for i, ns := range needs {
		indeg[i] = len(ns)
		for _, j := range ns {
			users[j] = append(users[j], i)
		}
	}
	ready := &intHeap{}
	for i, d := range indeg {
		if d == 0 {
			heap.Push(ready, i)
		}
	}
	order := make([]int, 0, len(needs))
	for ready.Len() > 0 {
		next := heap.Pop(ready).(int)
		order = append(order, next)
		for _, u := range users[next] {
			if indeg[u]--; indeg[u] == 0 {
				heap.Push(ready, u)
			}
		}
	}
	return order
}

// intHeap is a min-heap of step indices.
type intHeap []int

func (h intHeap) Len() int           { return len(h) }
func (h intHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h intHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *intHeap) Push(x any)        { *h = append(*h, x.(int)) }
func (h *intHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// bitset is a set of step indices.
type bitset []uint64

func (b bitset) has(i int) bool { return b[i/64]&(1<<(i%64)) != 0 }

// ancestors returns, for each step, the steps it needs directly or
// transitively, built in topological order: a step's set is the union of
// its needs and their sets.
func ancestors(needs [][]int, order []int) []bitset {
	words := (len(needs) + 63) / 64
	anc := make([]bitset, len(needs))
	for _, i := range order {
		a := make(bitset, words)
		for _, j := range needs[i] {
			a[j/64] |= 1 << (j % 64)
			for w, v := range anc[j] {
				a[w] |= v
			}
		}
		anc[i] = a
	}
	return anc
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
