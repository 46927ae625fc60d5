package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/baregate/baregate/internal/lab"
)

// TestGatewayAgainstRealAPIServer runs the gateway against a real etcd and kube-apiserver: it syncs
// its informers, wins the Lease, turns ready and exposes metrics; when the API server goes away it
// keeps running and stays live.
func TestGatewayAgainstRealAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp, client := lab.StartTestControlPlane(ctx, t, "baregate-system")
	// Something for the snapshot to count.
	if _, err := client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	cfg := NewConfig()
	cfg.NodeName = "node-a"
	cfg.Kubeconfig = cp.KubeconfigPath()
	cfg.AdminAddress = freeAddr(t)
	cfg.LeaderElection.LeaseDuration = 3 * time.Second
	cfg.LeaderElection.RenewDeadline = 2 * time.Second
	cfg.LeaderElection.RetryPeriod = 500 * time.Millisecond
	cfg.UI.Address = freeAddr(t)
	disableDataPlane(cfg)

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Run(runCtx, cfg) }()
	admin := "http://" + cfg.AdminAddress

	eventually(t, "/readyz 200", func() bool { code, _ := get(admin + "/readyz"); return code == 200 })
	eventually(t, "the leader Lease", func() bool {
		lease, err := client.CoordinationV1().Leases("baregate-system").Get(ctx, "baregate", metav1.GetOptions{})
		return err == nil && lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity == "node-a"
	})
	eventually(t, "metrics", func() bool {
		code, body := get(admin + "/metrics")
		return code == 200 && strings.Contains(body, "baregate_leader 1") &&
			strings.Contains(body, "baregate_services 2") // web and the apiserver's own "kubernetes"
	})

	eventually(t, "the dashboard's map to show the Service", func() bool {
		code, body := get("http://" + cfg.UI.Address + "/api/map")
		return code == 200 && strings.Contains(body, `"web"`)
	})

	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	// Over the lease timings above: long enough for the gateway to notice and give up leading.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if code, body := get(admin + "/livez"); code != 200 {
			t.Fatalf("/livez = %d %q during an API server outage; it must stay 200", code, body)
		}
		select {
		case err := <-done:
			t.Fatalf("gateway exited during an API server outage: %v", err)
		default:
		}
	}
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "leadership regained after the outage", func() bool {
		_, body := get(admin + "/metrics")
		return strings.Contains(body, "baregate_leader 1")
	})

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v on shutdown", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// disableDataPlane keeps the test from touching this machine's nftables, ARP or ports: the
// components have their own tests; this one is about the gateway's wiring.
func disableDataPlane(cfg *Config) {
	cfg.EnableNodePort, cfg.EnableLBIP, cfg.EnableIngress = false, false, false
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(url string) (int, string) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
