package chart_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/baregate/baregate/charts/baregate/charttest"
	"github.com/baregate/baregate/internal/lab"
)

func helm(t *testing.T) string { return charttest.Helm(t) }

func chartDir() string { return charttest.Dir() }

func render(t *testing.T, sets ...string) []byte {
	t.Helper()
	var args []string
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, err := template(t, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, out)
	}
	return out
}

// template runs helm template with extra arguments (-f, --set, --api-versions).
func template(t *testing.T, extra ...string) ([]byte, error) {
	t.Helper()
	return charttest.Template(t, "baregate-system", extra...)
}

// fullValues is the example that sets every value.
func fullValues() string { return filepath.Join(chartDir(), "ci", "full-values.yaml") }

func docs(manifest []byte) [][]byte {
	var out [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(manifest), -1) {
		if strings.TrimSpace(d) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

func daemonSet(t *testing.T, manifest []byte) *appsv1.DaemonSet {
	t.Helper()
	for _, d := range docs(manifest) {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(d, &meta); err != nil {
			t.Fatal(err)
		}
		if meta.Kind == "DaemonSet" {
			var ds appsv1.DaemonSet
			if err := yaml.UnmarshalStrict(d, &ds); err != nil {
				t.Fatalf("DaemonSet does not parse strictly: %v", err)
			}
			return &ds
		}
	}
	t.Fatal("no DaemonSet rendered")
	return nil
}

func TestLint(t *testing.T) {
	for _, args := range [][]string{nil, {"-f", fullValues()}} {
		args = append([]string{"lint", "--strict", chartDir()}, args...)
		if out, err := exec.Command(helm(t), args...).CombinedOutput(); err != nil {
			t.Errorf("helm %v: %v\n%s", args, err, out)
		}
	}
}

// TestArgsAreFlagsOfTheBinary keeps the chart and the command line in step: every flag the
// DaemonSet passes must be one baregate accepts.
func TestArgsAreFlagsOfTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "baregate")
	build := exec.Command("go", "build", "-o", bin, "./cmd/baregate")
	build.Dir = filepath.Join(chartDir(), "..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	help, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("baregate --help: %v\n%s", err, help)
	}
	for _, sets := range [][]string{
		nil,
		{"lbip.memberlistSecret=gossip", "lbip.interfaces={eth0,eth1}", "nodeport.addresses={192.0.2.0/24}", "ui.unauthenticatedAddress=0.0.0.0:9711",
			"ingress.acme.enabled=true", "ingress.acme.email=ops@example.com", "extraArgs={--ingress-access-log}"},
	} {
		ds := daemonSet(t, render(t, sets...))
		for _, arg := range ds.Spec.Template.Spec.Containers[0].Args {
			name, _, _ := strings.Cut(arg, "=")
			if !regexp.MustCompile(`(?m)^\s+(-\w, )?` + regexp.QuoteMeta(name) + `[\s=\[]`).Match(help) {
				t.Errorf("the chart passes %s, which baregate --help does not list", name)
			}
		}
	}
}

func TestValuesSwitchComponents(t *testing.T) {
	ds := daemonSet(t, render(t, "nodeport.enabled=false", "ui.enabled=false"))
	args := ds.Spec.Template.Spec.Containers[0].Args
	for _, want := range []string{"--nodeport=false", "--ui=false", "--lbip=true", "--ingress=true"} {
		if !slices.Contains(args, want) {
			t.Errorf("args %v lack %s", args, want)
		}
	}
	if !ds.Spec.Template.Spec.HostNetwork {
		t.Error("the gateway must run in the node's network namespace")
	}
	man := render(t, "ingress.enabled=false")
	if bytes.Contains(man, []byte("kind: IngressClass")) || bytes.Contains(man, []byte("name: baregate-ingress")) {
		t.Error("ingress disabled still renders its IngressClass or Service")
	}
}

// TestManifestsInstallOnARealAPIServer server-side applies everything the full example renders to a
// real kube-apiserver, which validates every object against its schema (the pools against the CRDs),
// and reads each object back.
func TestManifestsInstallOnARealAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp, client := lab.StartTestControlPlane(ctx, t, "baregate-system")
	dyn := dynamic.NewForConfigOrDie(cp.RESTConfig())
	// The control plane installed the chart's crds/ (the same files): they must be Established.
	waitCRDsEstablished(ctx, t, dyn)

	manifest, err := template(t, "-f", fullValues())
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, manifest)
	}
	if err := lab.ApplyInNamespace(ctx, cp.RESTConfig(), "baregate-system", manifest); err != nil {
		t.Fatalf("applying the chart: %v", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(client.Discovery()))
	objs := objects(t, manifest)
	for key, u := range objs {
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Errorf("%s: %v", key, err)
			continue
		}
		ri := dyn.Resource(m.Resource).Namespace(u.GetNamespace())
		if _, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{}); err != nil {
			t.Errorf("%s was not stored: %v", key, err)
		}
	}
	pool, err := dyn.Resource(poolsGVR).Namespace("baregate-system").Get(ctx, "public", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if addrs, _, _ := unstructured.NestedStringSlice(pool.Object, "spec", "addresses"); len(addrs) != 3 || addrs[1] != "203.0.113.100-203.0.113.110" {
		t.Errorf("pool public stored addresses %v", addrs)
	}
	svc, err := client.CoreV1().Services("baregate-system").Get(ctx, "baregate-ingress", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("ingress Service: type %s, externalTrafficPolicy %s", svc.Spec.Type, svc.Spec.ExternalTrafficPolicy)
	}
	class, err := client.NetworkingV1().IngressClasses().Get(ctx, "edge", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if class.Spec.Controller != "baregate.io/ingress" || class.Annotations["ingressclass.kubernetes.io/is-default-class"] != "true" {
		t.Errorf("IngressClass: %+v", class)
	}
}

// TestHelmInstallUpgradeUninstall runs helm itself against a real API server without the MetalLB CRDs:
// crds/ goes in first, so the pools of the same install are accepted; an upgrade changes a pool in
// place; uninstalling leaves the CRDs (and so every other pool of the cluster) alone.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp, _ := lab.StartTestControlPlane(ctx, t)
	dyn := dynamic.NewForConfigOrDie(cp.RESTConfig())
	crds := dyn.Resource(crdGVR)
	for _, name := range crdNames {
		if err := crds.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(ctx, t, "the MetalLB CRDs to be gone", func() bool {
		for _, name := range crdNames {
			if _, err := crds.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return false
			}
		}
		return true
	})
	run := func(args ...string) string {
		t.Helper()
		args = append(args, "--kubeconfig", cp.KubeconfigPath())
		out, err := exec.CommandContext(ctx, helm(t), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("helm %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := run("install", "baregate", chartDir(), "--namespace", "baregate-system", "--create-namespace",
		"--set", "lbip.pools[0].name=default", "--set", "lbip.pools[0].addresses={192.0.2.200-192.0.2.220}")
	for _, want := range []string{"STATUS: deployed", "get service baregate-ingress", "port-forward service/baregate-dashboard 9711", "Address pools created: default."} {
		if !strings.Contains(out, want) {
			t.Errorf("helm install output lacks %q:\n%s", want, out)
		}
	}
	waitCRDsEstablished(ctx, t, dyn)
	pools := dyn.Resource(poolsGVR).Namespace("baregate-system")
	if _, err := pools.Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("the pool of the install: %v", err)
	}
	run("upgrade", "baregate", chartDir(), "--namespace", "baregate-system",
		"--set", "lbip.pools[0].name=default", "--set", "lbip.pools[0].addresses={192.0.2.230/31}")
	pool, err := pools.Get(ctx, "default", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if addrs, _, _ := unstructured.NestedStringSlice(pool.Object, "spec", "addresses"); !slices.Equal(addrs, []string{"192.0.2.230/31"}) {
		t.Errorf("after the upgrade the pool has %v", addrs)
	}
	run("uninstall", "baregate", "--namespace", "baregate-system")
	for _, name := range crdNames {
		if _, err := crds.Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("uninstall removed CRD %s: %v", name, err)
		}
	}
}

var (
	crdGVR   = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	poolsGVR = schema.GroupVersionResource{Group: "metallb.io", Version: "v1beta1", Resource: "ipaddresspools"}
	crdNames = []string{"ipaddresspools.metallb.io", "l2advertisements.metallb.io", "servicel2statuses.metallb.io"}
)

func waitCRDsEstablished(ctx context.Context, t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	waitFor(ctx, t, "the MetalLB CRDs to be Established", func() bool {
		for _, name := range crdNames {
			crd, err := dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			established := false
			for _, c := range conds {
				m, _ := c.(map[string]any)
				established = established || (m["type"] == "Established" && m["status"] == "True")
			}
			if !established {
				return false
			}
		}
		return true
	})
}

func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
