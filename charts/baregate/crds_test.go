package chart_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/baregate/baregate/charts/baregate/charttest"
	"github.com/baregate/baregate/internal/testutil"
)

// TestCRDsAreGenerated regenerates the chart's CRDs with hack/gen-crds.sh into a temporary directory and
// requires the checked-in files to be exactly that output, so that a hand edit, a file the script does
// not produce, or a bump of controller-gen or MetalLB without regenerating fails.
func TestCRDsAreGenerated(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		testutil.SkipOrFail(t, "go is not installed; hack/gen-crds.sh builds controller-gen with it")
	}
	script := filepath.Join(filepath.Dir(filepath.Dir(charttest.Dir())), "hack", "gen-crds.sh")
	out := t.TempDir()
	cmd := exec.Command(script, out)
	if output, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("running %s: %v\n%s", script, err, output)
	}

	checkedIn := filepath.Join(charttest.Dir(), "crds")
	want, got := yamlFiles(t, checkedIn), yamlFiles(t, out)
	if !slices.Equal(want, got) {
		t.Fatalf("hack/gen-crds.sh writes %v, but %s holds %v", got, checkedIn, want)
	}
	for _, name := range want {
		w, err := os.ReadFile(filepath.Join(checkedIn, name))
		if err != nil {
			t.Fatal(err)
		}
		g, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(w, g) {
			t.Errorf("%s differs from what hack/gen-crds.sh generates (first difference at line %d); run make crds", name, firstDiffLine(w, g))
		}
	}
}

func yamlFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	slices.Sort(names)
	return names
}

func firstDiffLine(a, b []byte) int {
	la, lb := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := range min(len(la), len(lb)) {
		if !bytes.Equal(la[i], lb[i]) {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}
