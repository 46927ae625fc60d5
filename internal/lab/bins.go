package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// RepoRoot finds the baregate checkout by walking up from the working directory (tests run in their
// package directory) to the directory that holds hack/build-k8s.sh.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "build-k8s.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the baregate checkout (no hack/build-k8s.sh above the working directory)")
		}
		dir = parent
	}
}

// K8sBinDir returns the directory holding kube-apiserver, kube-controller-manager and kube-proxy:
// $BAREGATE_K8S_BIN when set, else what hack/build-k8s.sh prints (it builds them the first time).
func K8sBinDir(ctx context.Context) (string, error) {
	if d := os.Getenv("BAREGATE_K8S_BIN"); d != "" {
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "build-k8s.sh"))
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the Kubernetes binaries (hack/build-k8s.sh): %w: %s", err, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[len(lines)-1], nil
}

// BuildBinary builds the command package pkg of the checkout (e.g. "./cmd/baregate") into dir and
// returns the binary's path.
func BuildBinary(ctx context.Context, pkg, dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w: %s", pkg, err, b)
	}
	return out, nil
}
