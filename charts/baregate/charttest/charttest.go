// Package charttest renders the baregate chart with the helm CLI for tests: the chart's own tests and
// the lab test that runs gateways with the chart's RBAC.
package charttest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/baregate/baregate/internal/testutil"
)

// KubeVersion is the cluster version charts are rendered for: the lab's. helm built from source
// otherwise assumes an old default that the chart's kubeVersion refuses.
const KubeVersion = "1.36.3"

// Helm finds the helm CLI that `make deps` installs from the Go module proxy; it skips the test (or
// fails it under CI) when there is none.
func Helm(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	home, _ := os.UserHomeDir()
	p := filepath.Join(home, ".cache", "baregate", "bin", "helm")
	if _, err := os.Stat(p); err != nil {
		testutil.SkipOrFail(t, "helm is not installed; make deps installs it into ~/.cache/baregate/bin")
	}
	return p
}

// Dir is the chart's directory.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// Template runs `helm template baregate <chart> --namespace ns` with extra arguments (-f, --set,
// --api-versions); it returns the manifest, or helm's error output with the error.
func Template(t testing.TB, ns string, extra ...string) ([]byte, error) {
	t.Helper()
	args := append([]string{"template", "baregate", Dir(), "--namespace", ns, "--kube-version", KubeVersion}, extra...)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(Helm(t), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stderr.Bytes(), err
	}
	return stdout.Bytes(), nil
}
