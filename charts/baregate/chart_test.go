package chart_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/internal/testutil"
)

// helm finds the helm CLI that `make deps` installs from the Go module proxy.
func helm(t *testing.T) string {
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

func chartDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

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

// template runs helm template with extra arguments (-f, --set, --api-versions) and returns its output.
func template(t *testing.T, extra ...string) ([]byte, error) {
	t.Helper()
	// The cluster version the lab runs; helm built from source assumes an old default.
	args := append([]string{"template", "baregate", chartDir(), "--namespace", "baregate-system", "--kube-version", "1.36.3"}, extra...)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(helm(t), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stderr.Bytes(), err
	}
	return stdout.Bytes(), nil
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
		{"lbip.memberlistSecret=gossip", "lbip.interfaces={eth0,eth1}", "nodeport.addresses={192.0.2.0/24}", "ui.unauthenticatedAddress=0.0.0.0:9711"},
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

// TestManifestsInstallOnARealAPIServer creates everything the chart renders (CRDs included) in a
// real kube-apiserver, which validates every object against its schema.
func TestManifestsInstallOnARealAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp, client := lab.StartTestControlPlane(ctx, t, "baregate-system")
	if err := lab.ApplyInNamespace(ctx, cp.RESTConfig(), "baregate-system", render(t, "ingress.defaultClass=true")); err != nil {
		t.Fatalf("applying the chart: %v", err)
	}
	ds, err := client.AppsV1().DaemonSets("baregate-system").Get(ctx, "baregate", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ds.Spec.Template.Spec.ServiceAccountName; got != "baregate" {
		t.Errorf("serviceAccountName %q", got)
	}
	svc, err := client.CoreV1().Services("baregate-system").Get(ctx, "baregate-ingress", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("ingress Service: type %s, externalTrafficPolicy %s", svc.Spec.Type, svc.Spec.ExternalTrafficPolicy)
	}
	class, err := client.NetworkingV1().IngressClasses().Get(ctx, "baregate", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if class.Spec.Controller != "baregate.io/ingress" || class.Annotations["ingressclass.kubernetes.io/is-default-class"] != "true" {
		t.Errorf("IngressClass: %+v", class)
	}
}
