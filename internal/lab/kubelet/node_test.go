package kubelet

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/baregate/baregate/internal/testutil"
)

func TestNodeObject(t *testing.T) {
	cfg := &Config{NodeName: "node1", Zone: "zone-a", Labels: map[string]string{"extra": "1", "kubernetes.io/os": "linux"},
		PodCIDRs: []netip.Prefix{v4, v6}, NodeIPs: addrs("192.0.2.11", "2001:db8:0:1::11")}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	n := nodeObject(cfg, now)
	for k, v := range map[string]string{"kubernetes.io/hostname": "node1", "topology.kubernetes.io/zone": "zone-a", "extra": "1", "kubernetes.io/os": "linux"} {
		if n.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, n.Labels[k], v)
		}
	}
	if n.Spec.PodCIDR != "198.18.1.0/24" || len(n.Spec.PodCIDRs) != 2 || n.Spec.PodCIDRs[1] != "2001:db8:1:1::/64" {
		t.Errorf("pod CIDRs %q %q", n.Spec.PodCIDR, n.Spec.PodCIDRs)
	}
	want := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.11"}, {Type: corev1.NodeInternalIP, Address: "2001:db8:0:1::11"}, {Type: corev1.NodeHostName, Address: "node1"}}
	if len(n.Status.Addresses) != len(want) {
		t.Fatalf("addresses %v", n.Status.Addresses)
	}
	for i := range want {
		if n.Status.Addresses[i] != want[i] {
			t.Errorf("address %d = %v, want %v", i, n.Status.Addresses[i], want[i])
		}
	}
	if len(n.Status.Conditions) != 1 || n.Status.Conditions[0].Type != corev1.NodeReady || n.Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Errorf("conditions %v", n.Status.Conditions)
	}
	if n.Status.Allocatable.Pods().Value() != 110 {
		t.Errorf("allocatable %v", n.Status.Allocatable)
	}
	cfg.Zone = ""
	if _, ok := nodeObject(cfg, now).Labels["topology.kubernetes.io/zone"]; ok {
		t.Error("empty zone label set")
	}
}

func TestNames(t *testing.T) {
	a, b := podNetns("p-", "node1", "uid-a"), podNetns("p-", "node1", "uid-b")
	if a == b || a[:len("p-node1-")] != "p-node1-" {
		t.Errorf("namespaces %q %q", a, b)
	}
	if v := hostVeth("uid-a"); len(v) > 15 || v == hostVeth("uid-b") {
		t.Errorf("veth name %q", v)
	}
}

// TestCleanupRemovesOnlyPrefixed removes a pod namespace with a process inside and spares a
// namespace outside the prefix.
func TestCleanupRemovesOnlyPrefixed(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "sleep")
	if err := Cleanup(""); err == nil {
		t.Error("Cleanup with an empty prefix accepted")
	}
	prefix := "bgkt-" + strconv.Itoa(os.Getpid()) + "-cl-"
	victim, keep := prefix+"pod", "bgkt-"+strconv.Itoa(os.Getpid())+"-keep"
	for _, ns := range []string{victim, keep} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	sleeper := exec.Command("ip", "netns", "exec", victim, "sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { sleeper.Wait(); close(exited) }()
	// Until ip has entered the namespace, nothing there is to be found.
	for {
		out, err := exec.Command("ip", "netns", "pids", victim).Output()
		if err != nil {
			t.Fatal(err)
		}
		if len(out) > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := Cleanup(prefix); err != nil {
		t.Fatal(err)
	}
	<-exited // the sleeper was killed; a leak would hang here until the test times out
	if _, err := os.Stat(filepath.Join(netnsDir, victim)); err == nil {
		t.Error("prefixed namespace survived")
	}
	if _, err := os.Stat(filepath.Join(netnsDir, keep)); err != nil {
		t.Error("namespace outside the prefix removed")
	}
}
