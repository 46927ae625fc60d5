package lab

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
)

func startTestControlPlane(t *testing.T, controllers bool) *ControlPlane {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cp, err := StartControlPlane(ctx, ControlPlaneOptions{Dir: t.TempDir(), Controllers: controllers})
	if err != nil {
		t.Fatalf("StartControlPlane: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return cp
}

func TestControlPlaneServesAndSurvivesAnAPIServerRestart(t *testing.T) {
	t.Parallel()
	cp := startTestControlPlane(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs, err := cp.Client()
	if err != nil {
		t.Fatal(err)
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("version: %v", err)
	}
	if v.Major != "1" || v.GitVersion == "v0.0.0-master" {
		t.Errorf("server version %+v: want a real release version", v)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeLoadBalancer,
			IPFamilyPolicy: ptr(corev1.IPFamilyPolicyPreferDualStack),
			Ports:          []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating Service: %v", err)
	}
	got, err := cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading Service back: %v", err)
	}
	if len(got.Spec.ClusterIPs) != 2 || got.Spec.ClusterIPs[0][:7] != "198.19." {
		t.Errorf("ClusterIPs %v: want one from %s and one from %s", got.Spec.ClusterIPs, ServiceCIDRv4, ServiceCIDRv6)
	}

	// The MetalLB CRDs the chart ships are served and accept a pool.
	dyn, err := dynamic.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	pools := dyn.Resource(schema.GroupVersionResource{Group: "metallb.io", Version: "v1beta1", Resource: "ipaddresspools"}).Namespace("default")
	pool := []byte(`{"apiVersion":"metallb.io/v1beta1","kind":"IPAddressPool","metadata":{"name":"lab","namespace":"default"},"spec":{"addresses":["203.0.113.0/24"]}}`)
	if err := Apply(ctx, cp.RESTConfig(), pool); err != nil {
		t.Fatalf("applying an IPAddressPool: %v", err)
	}
	if _, err := pools.Get(ctx, "lab", metav1.GetOptions{}); err != nil {
		t.Fatalf("reading the IPAddressPool back: %v", err)
	}

	if err := cp.StopAPIServer(); err != nil {
		t.Fatalf("StopAPIServer: %v", err)
	}
	if _, err := cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{}); err == nil {
		t.Fatal("the API server still answers after StopAPIServer")
	}
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatalf("StartAPIServer: %v", err)
	}
	got, err = cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading Service after the restart: %v", err)
	}
	if got.Spec.ClusterIP == "" {
		t.Error("Service lost its ClusterIP across the API server restart")
	}
}

func ptr[T any](v T) *T { return &v }

func TestControlPlaneControllersMakeServiceAccountsAndSlices(t *testing.T) {
	t.Parallel()
	cp := startTestControlPlane(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs, err := cp.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80}},
		},
	}
	if _, err := cs.CoreV1().Services("team").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts("team").Get(ctx, "default", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		slices, err := cs.DiscoveryV1().EndpointSlices("team").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=web"})
		return err == nil && len(slices.Items) > 0, nil
	})
	if err != nil {
		t.Fatalf("the controllers made no default ServiceAccount or EndpointSlice in a new namespace: %v", err)
	}
}
