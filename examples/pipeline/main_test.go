package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/worker"
)

// mainEnv makes the test binary run the example's main with the
// arguments in the variable, separated by newlines.
const mainEnv = "TPROXY_PIPELINE_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		worker.Main(newWorker())
	}
	if args := os.Getenv(mainEnv); args != "" {
		os.Args = append([]string{"pipeline"}, strings.Split(args, "\n")...)
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(wiretest.Main(m)) // a tap reporting after its test ended fails the run
}

// want is region_revenue.csv for testdata/orders.csv, computed
// independently with awk:
//
//	awk -F, 'NR>1 && $6=="shipped" && $4>=2 {split($5,a,"."); c=a[1]*100+a[2];
//	  o[$2]++; u[$2]+=$4; r[$2]+=$4*c} END {for (k in o) printf "%s,%d,%d,%d.%02d\n",
//	  k, o[k], u[k], int(r[k]/100), r[k]%100}' testdata/orders.csv | sort
const want = `region,orders,units,revenue
central,25,144,1272.01
east,29,162,1402.62
north,34,190,2118.62
south,29,168,1674.87
west,21,123,1177.28
`

// TestPipeline runs the pipeline in a worker subprocess and in-process:
// the output CSV is correct and byte-identical, and the statuses agree.
func TestPipeline(t *testing.T) {
	outputs := map[bool][]byte{}
	for _, inProcess := range []bool{false, true} {
		dir := filepath.Join(t.TempDir(), "session")
		st, err := runPipeline(t.Context(), inProcess, dir, "testdata/orders.csv", nil)
		if err != nil {
			t.Fatalf("inProcess=%v: %v", inProcess, err)
		}
		if st.Outcome != host.OutcomeSuccess || st.StepsCompleted != 3 {
			t.Fatalf("inProcess=%v: status %+v", inProcess, st)
		}
		rows := map[string]int64{}
		for _, s := range st.Steps {
			rows[s.ID] = s.RowsProcessed
		}
		if rows["extract"] != 240 || rows["transform"] != 138 || rows["load"] != 5 {
			t.Errorf("inProcess=%v: rows per step %v, want extract 240, transform 138, load 5", inProcess, rows)
		}
		b, err := os.ReadFile(filepath.Join(dir, host.ArtifactsDir, "load", outputFile))
		if err != nil {
			t.Fatal(err)
		}
		outputs[inProcess] = b
	}
	if got := string(outputs[false]); got != want {
		t.Errorf("subprocess output:\n%s\nwant:\n%s", got, want)
	}
	if string(outputs[true]) != string(outputs[false]) {
		t.Errorf("in-process output differs from the subprocess's:\n%s", outputs[true])
	}
}

func TestPipelineMissingData(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "session")
	st, err := runPipeline(t.Context(), true, dir, "testdata/no-such.csv", nil)
	if err == nil || st.Failure == nil || st.Failure.StepID != "extract" {
		t.Fatalf("err %v, status %+v", err, st)
	}
	if _, err := os.Stat(filepath.Join(dir, host.StatusFile)); err != nil {
		t.Error(err)
	}
}
