package lab

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// StartTestControlPlane starts a control plane on loopback for one test, stopped when the test ends,
// with the given namespaces created. It skips under -short, which runs only what needs no processes.
func StartTestControlPlane(ctx context.Context, t testing.TB, namespaces ...string) (*ControlPlane, kubernetes.Interface) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cp, err := StartControlPlane(ctx, ControlPlaneOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("starting control plane: %v", err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	client, err := cp.Client()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range namespaces {
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating namespace %s: %v", ns, err)
		}
	}
	return cp, client
}
