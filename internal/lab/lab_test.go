package lab

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/baregate/baregate/internal/testutil"
)

// TestUpServesTheLabAndDownRemovesIt brings a lab up and down: nodes registered and Ready, the API
// server reachable from a node's namespace at the control-plane host, nothing left afterwards.
func TestUpServesTheLabAndDownRemovesIt(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("brings up a whole lab")
	}
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	id := testLabID(t)
	dir := t.TempDir()
	l, err := Up(ctx, Options{ID: id, Nodes: 2, Clients: 1, Dir: dir})
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	downed := false
	t.Cleanup(func() {
		if !downed {
			l.Down()
		}
	})
	nodes, err := l.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 2 {
		t.Errorf("%d nodes registered, want 2", len(nodes.Items))
	}
	for i := range nodes.Items {
		if !NodeReady(&nodes.Items[i]) {
			t.Errorf("node %s is not Ready", nodes.Items[i].Name)
		}
	}
	out, err := l.Exec(ctx, NodeName(2), "curl", "-sS", "--max-time", "5", "--cacert", filepath.Join(dir, "cp", "ca.crt"), l.Info().Server+"/readyz")
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("node2 does not reach the API server at %s: %v %s", l.Info().Server, err, out)
	}
	info, err := ReadInfo(dir)
	if err != nil || info.ID != id || info.PID != os.Getpid() {
		t.Errorf("ReadInfo = %+v, %v", info, err)
	}

	downed = true
	if err := l.Down(); err != nil {
		t.Fatalf("Down: %v", err)
	}
	if left, _ := LabNetns(ctx, id); len(left) > 0 {
		t.Errorf("namespaces left after Down: %v", left)
	}
	if procs := mustProcessesMentioning(t, dir); len(procs) > 0 {
		t.Errorf("processes left after Down: %v", procs)
	}
}

func mustProcessesMentioning(t *testing.T, s string) []string {
	t.Helper()
	procs, err := ProcessesMentioning(s)
	if err != nil {
		t.Fatal(err)
	}
	return procs
}

// TestUpThatFailsLeavesNothingBehind interrupts Up while it builds the lab: Up must fail and remove what
// it had made.
func TestUpThatFailsLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts parts of a lab")
	}
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	id := testLabID(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l, err := Up(ctx, Options{ID: id, Nodes: 3, Clients: 2, Dir: dir, Self: self})
	if err == nil {
		l.Down()
		t.Fatal("Up succeeded within 2 seconds; the test wants it interrupted")
	}
	if left, _ := LabNetns(context.Background(), id); len(left) > 0 {
		t.Errorf("namespaces left after a failed Up (%v): %v", err, left)
	}
	if procs := mustProcessesMentioning(t, dir); len(procs) > 0 {
		t.Errorf("processes left after a failed Up: %v", procs)
	}
}
