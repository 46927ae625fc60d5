package chart_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// objects parses every rendered document, keyed "Kind/name".
func objects(t *testing.T, manifest []byte) map[string]*unstructured.Unstructured {
	t.Helper()
	out := map[string]*unstructured.Unstructured{}
	for _, d := range docs(manifest) {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal(d, &u.Object); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, d)
		}
		if len(u.Object) == 0 {
			continue
		}
		out[u.GetKind()+"/"+u.GetName()] = &u
	}
	return out
}

func kinds(objs map[string]*unstructured.Unstructured) []string {
	var out []string
	for k := range objs {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// typed converts a rendered object strictly, so a misspelt field fails.
func typed[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	b, err := yaml.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	var v T
	if err := yaml.UnmarshalStrict(b, &v); err != nil {
		t.Fatalf("%s/%s does not parse strictly: %v", u.GetKind(), u.GetName(), err)
	}
	return &v
}

func TestDefaultAndFullExampleRender(t *testing.T) {
	def := objects(t, render(t))
	want := []string{"ClusterRole/baregate", "ClusterRoleBinding/baregate", "DaemonSet/baregate", "IngressClass/baregate",
		"Role/baregate", "RoleBinding/baregate", "Service/baregate-dashboard", "Service/baregate-ingress", "ServiceAccount/baregate"}
	if got := kinds(def); !slices.Equal(got, want) {
		t.Errorf("defaults render %v, want %v", got, want)
	}
	full, err := template(t, "-f", fullValues(), "--api-versions", "monitoring.coreos.com/v1/PodMonitor", "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
	if err != nil {
		t.Fatalf("helm template -f full-values.yaml: %v\n%s", err, full)
	}
	objs := objects(t, full)
	for _, k := range []string{"IPAddressPool/public", "L2Advertisement/public", "IPAddressPool/reserved", "PodMonitor/baregate",
		"ServiceMonitor/baregate", "Service/baregate-metrics", "IngressClass/edge"} {
		if objs[k] == nil {
			t.Errorf("the full example renders no %s (got %v)", k, kinds(objs))
		}
	}
	if objs["L2Advertisement/reserved"] != nil {
		t.Error("pool reserved has l2Advertisement: false but got an L2Advertisement")
	}
	if got, _, _ := unstructured.NestedBool(objs["IPAddressPool/reserved"].Object, "spec", "autoAssign"); got {
		t.Error("pool reserved: autoAssign false was rendered true")
	}
	ds := daemonSet(t, full)
	c := ds.Spec.Template.Spec.Containers[0]
	if c.Image != "registry.example.com/edge/baregate@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" {
		t.Errorf("image %q: the digest must pin it", c.Image)
	}
	for _, arg := range []string{"--ingress-http-address=:8080", "--lbip-interfaces=eth0,eth1", "--v=2",
		"--lbip-memberlist-secret-file=/etc/baregate/memberlist/secretkey", "--ui-unauthenticated-address=0.0.0.0:9712",
		"--snapshot-min-interval=100ms", "--admin-address=0.0.0.0:9720"} {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("args %v lack %s", c.Args, arg)
		}
	}
	dash := typed[corev1.Service](t, objs["Service/baregate-dashboard"])
	if dash.Spec.Type != corev1.ServiceTypeLoadBalancer || dash.Spec.Ports[0].Port != 80 {
		t.Errorf("dashboard Service %+v", dash.Spec)
	}
	if port := containerPort(c, "dashboard"); port != 9712 {
		t.Errorf("the dashboard Service targets port %d, want the unauthenticated listener's 9712", port)
	}
	if port := containerPort(daemonSet(t, render(t)).Spec.Template.Spec.Containers[0], "dashboard"); port != 9711 {
		t.Errorf("by default the dashboard port is %d, want the loopback listener's 9711", port)
	}
}

func readTemplate(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(), "templates", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func TestMonitorsOnlyWithTheOperatorAPI(t *testing.T) {
	without := objects(t, render(t, "metrics.serviceMonitor.enabled=true"))
	for k := range without {
		if strings.HasSuffix(strings.Split(k, "/")[0], "Monitor") {
			t.Errorf("%s rendered for a cluster without monitoring.coreos.com/v1", k)
		}
	}
	with, err := template(t, "--api-versions", "monitoring.coreos.com/v1/PodMonitor", "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
	if err != nil {
		t.Fatalf("%v\n%s", err, with)
	}
	objs := objects(t, with)
	if objs["PodMonitor/baregate"] == nil || objs["ServiceMonitor/baregate"] != nil {
		t.Errorf("with the operator's API and default values want the PodMonitor only, got %v", kinds(objs))
	}
}

// TestSchemaRejectsBadValues: values.schema.json stops bad values before anything reaches the cluster.
func TestSchemaRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		set  string
		want string // in helm's error
	}{
		{"logVerbosity=11", "logVerbosity"},
		{"logVerbosity=loud", "logVerbosity"},
		{"adminPort=70000", "adminPort"},
		{"ingress.httpPort=0", "httpPort"},
		{"ingress.service.type=ExternalName", "type"},
		{"ingress.service.externalTrafficPolicy=Nearest", "externalTrafficPolicy"},
		{"ingress.className=Bad_Class", "className"},
		{"ingress.acme.email=not-an-address", "email"},
		{"ingress.acme.directoryURL=ftp://ca.example.com", "directoryURL"},
		{"ingress.acme.directoryURL=http://ca.example.com/dir", "directoryURL"},
		{"ui.address=0.0.0.0:9711", "address"},
		{"ui.unauthenticatedAddress=everywhere", "unauthenticatedAddress"},
		{"ui.service.type=Ingress", "type"},
		{"image.pullPolicy=Sometimes", "pullPolicy"},
		{"image.digest=sha1:abc", "digest"},
		{"lbip.pools[0].name=p", "addresses"},
		{"lbip.pools[0].name=p,lbip.pools[0].addresses={not-an-ip}", "addresses"},
		{"lbip.pools[0].name=Pool_1,lbip.pools[0].addresses={192.0.2.0/24}", "name"},
		{"lbip.interfaces={eth0/1}", "interfaces"},
		{"nodeport.addresses={192.0.2.1}", "addresses"},
		{"nodeport.enabled=yes", "enabled"},
		{"extraArgs={-v}", "extraArgs"},
		{"tolerations[0].operator=Maybe", "operator"},
		{"lbip.typo=1", "typo"},
		{"unknownTopLevel=1", "unknownTopLevel"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			out, err := template(t, "--set", tc.set)
			if err == nil {
				t.Fatalf("--set %s rendered; the schema must reject it", tc.set)
			}
			if !bytes.Contains(out, []byte("schema")) || !bytes.Contains(out, []byte(tc.want)) {
				t.Errorf("--set %s failed, but not for the schema on %s:\n%s", tc.set, tc.want, out)
			}
		})
	}
	// Sanity: the schema accepts good values of the same keys, so the rejections above are about values.
	for _, set := range []string{"logVerbosity=4", "ingress.httpPort=8080", "ui.address=[::1]:9711",
		"ui.unauthenticatedAddress=[2001:db8::1]:9711", "lbip.pools[0].name=p,lbip.pools[0].addresses={192.0.2.10-192.0.2.20}",
		"nodeport.addresses={2001:db8::/64}", "extraArgs={--ingress-access-log}"} {
		if out, err := template(t, "--set", set); err != nil {
			t.Errorf("--set %s: %v\n%s", set, err, out)
		}
	}
	// What a schema cannot say, the templates refuse.
	for _, tc := range []struct {
		sets []string
		want string
	}{
		{[]string{"ui.service.type=NodePort"}, "unauthenticatedAddress"},
		{[]string{"lbip.enabled=false", "nodeport.enabled=false", "ingress.enabled=false", "ui.enabled=false"}, "nothing to run"},
		{[]string{"ui.address="}, "listen nowhere"},
	} {
		var args []string
		for _, s := range tc.sets {
			args = append(args, "--set", s)
		}
		if out, err := template(t, args...); err == nil || !bytes.Contains(out, []byte(tc.want)) {
			t.Errorf("%v: err %v, output %s; want a failure saying %q", tc.sets, err, out, tc.want)
		}
	}
}

// TestDaemonSetHardening: the security and scheduling promises of the chart.
func TestDaemonSetHardening(t *testing.T) {
	for _, tc := range []struct {
		sets []string
		caps []corev1.Capability
	}{
		{nil, []corev1.Capability{"NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"}},
		{[]string{"ingress.httpPort=8080", "ingress.httpsPort=8443"}, []corev1.Capability{"NET_ADMIN", "NET_RAW"}},
		{[]string{"ingress.enabled=false"}, []corev1.Capability{"NET_ADMIN", "NET_RAW"}},
	} {
		ds := daemonSet(t, render(t, tc.sets...))
		spec := ds.Spec.Template.Spec
		c := spec.Containers[0]
		sc := c.SecurityContext
		if sc == nil || sc.Capabilities == nil {
			t.Fatalf("%v: no securityContext capabilities", tc.sets)
		}
		if !slices.Equal(sc.Capabilities.Add, tc.caps) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%v: capabilities add %v drop %v, want add %v drop [ALL]", tc.sets, sc.Capabilities.Add, sc.Capabilities.Drop, tc.caps)
		}
		if sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%v: want privileged false, allowPrivilegeEscalation false, readOnlyRootFilesystem true: %+v", tc.sets, sc)
		}
		for _, v := range spec.Volumes {
			if v.HostPath != nil {
				t.Errorf("%v: hostPath volume %s: the gateway needs none", tc.sets, v.Name)
			}
		}
		if !spec.HostNetwork || spec.ServiceAccountName != "baregate" {
			t.Errorf("hostNetwork %v serviceAccountName %q", spec.HostNetwork, spec.ServiceAccountName)
		}
		if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/livez" || p.HTTPGet.Port.String() != "admin" {
			t.Errorf("liveness probe %+v, want GET /livez on admin", p)
		}
		if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.String() != "admin" {
			t.Errorf("readiness probe %+v, want GET /readyz on admin", p)
		}
		if containerPort(c, "admin") != 9710 {
			t.Errorf("admin port %d, want 9710", containerPort(c, "admin"))
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("no resource requests: %+v", c.Resources)
		}
		if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
			return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
		}) {
			t.Errorf("tolerations %v do not tolerate every taint", spec.Tolerations)
		}
		ru := ds.Spec.UpdateStrategy.RollingUpdate
		if ds.Spec.UpdateStrategy.Type != "RollingUpdate" || ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 1 {
			t.Errorf("update strategy %+v, want RollingUpdate maxUnavailable 1", ds.Spec.UpdateStrategy)
		}
	}
}

// rules returns the rules of the ClusterRole and the Role.
func rules(t *testing.T, manifest []byte) (cluster, ns []rbacv1.PolicyRule) {
	t.Helper()
	objs := objects(t, manifest)
	return typed[rbacv1.ClusterRole](t, objs["ClusterRole/baregate"]).Rules, typed[rbacv1.Role](t, objs["Role/baregate"]).Rules
}

// verbs is every verb the rules grant on group/resource.
func verbs(rs []rbacv1.PolicyRule, group, resource string) []string {
	var out []string
	for _, r := range rs {
		if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) {
			out = append(out, r.Verbs...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestRBACLeastPrivilege: no wildcards, Secrets written only with ACME, each component's writes only
// when it runs, and a comment above every rule.
func TestRBACLeastPrivilege(t *testing.T) {
	def := render(t)
	cr, role := rules(t, def)
	for _, r := range append(slices.Clone(cr), role...) {
		for _, s := range [][]string{r.Verbs, r.Resources, r.APIGroups} {
			if slices.Contains(s, "*") {
				t.Errorf("wildcard in rule %+v", r)
			}
		}
		if slices.Contains(r.Verbs, "delete") && !slices.Equal(r.Resources, []string{"servicel2statuses"}) {
			t.Errorf("rule %+v deletes", r)
		}
	}
	for _, tc := range []struct {
		rules           []rbacv1.PolicyRule
		group, resource string
		want            []string
	}{
		{cr, "", "secrets", []string{"list", "watch"}},
		{role, "", "secrets", nil},
		{role, "coordination.k8s.io", "leases", []string{"create", "get", "update"}},
		{cr, "", "services/status", []string{"update"}},
		{cr, "", "services", []string{"get", "list", "patch", "watch"}},
		{cr, "networking.k8s.io", "ingresses/status", []string{"update"}},
		{cr, "", "events", []string{"create", "list", "patch"}},
		{cr, "", "pods", []string{"list", "watch"}},
		{cr, "metallb.io", "ipaddresspools/status", []string{"patch"}},
		{role, "metallb.io", "servicel2statuses", []string{"create", "delete", "list"}},
		{role, "metallb.io", "servicel2statuses/status", []string{"patch"}},
	} {
		if got := verbs(tc.rules, tc.group, tc.resource); !slices.Equal(got, tc.want) {
			t.Errorf("default verbs on %s %q: %v, want %v", tc.resource, tc.group, got, tc.want)
		}
	}
	acr, arole := rules(t, render(t, "ingress.acme.enabled=true"))
	if got := verbs(acr, "", "secrets"); !slices.Contains(got, "create") || !slices.Contains(got, "update") {
		t.Errorf("with ACME the gateway cannot write issued certificates: secrets %v", got)
	}
	if got := verbs(arole, "", "secrets"); !slices.Contains(got, "create") || !slices.Contains(got, "delete") {
		t.Errorf("with ACME the gateway cannot keep its cache: secrets in its namespace %v", got)
	}
	ocr, _ := rules(t, render(t, "lbip.enabled=false", "ingress.enabled=false", "ui.enabled=false"))
	for _, res := range []string{"services/status", "ingresses/status", "ipaddresspools/status", "pods"} {
		for _, g := range []string{"", "networking.k8s.io", "metallb.io"} {
			if got := verbs(ocr, g, res); len(got) > 0 {
				t.Errorf("nodeport alone is granted %v on %s", got, res)
			}
		}
	}
	if got := verbs(ocr, "", "services"); !slices.Equal(got, []string{"list", "watch"}) {
		t.Errorf("nodeport alone: services %v, want list watch", got)
	}

	// Every rule carries its reason: the line above each "- apiGroups" in the template is a comment.
	tpl := readTemplate(t, "rbac.yaml")
	lines := strings.Split(tpl, "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "- apiGroups:") {
			j := i - 1
			for j >= 0 && strings.HasPrefix(strings.TrimSpace(lines[j]), "{{") {
				j--
			}
			if j < 0 || !strings.HasPrefix(strings.TrimSpace(lines[j]), "#") {
				t.Errorf("rbac.yaml line %d: rule without a comment saying why", i+1)
			}
		}
	}
}

func TestIngressClassAndServices(t *testing.T) {
	objs := objects(t, render(t, "ingress.defaultClass=true", "ingress.className=edge"))
	class := objs["IngressClass/edge"]
	if class == nil || class.GetAnnotations()["ingressclass.kubernetes.io/is-default-class"] != "true" {
		t.Fatalf("IngressClass edge missing or not default: %v", class)
	}
	if ctl, _, _ := unstructured.NestedString(class.Object, "spec", "controller"); ctl != "baregate.io/ingress" {
		t.Errorf("controller %q", ctl)
	}
	if objects(t, render(t))["IngressClass/baregate"].GetAnnotations() != nil {
		t.Error("the IngressClass is the default without ingress.defaultClass")
	}
	svc := typed[corev1.Service](t, objs["Service/baregate-ingress"])
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("ingress Service %+v", svc.Spec)
	}
	dash := typed[corev1.Service](t, objs["Service/baregate-dashboard"])
	if dash.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("dashboard Service type %s, want ClusterIP by default", dash.Spec.Type)
	}
	if objects(t, render(t, "ui.service.enabled=false"))["Service/baregate-dashboard"] != nil {
		t.Error("ui.service.enabled=false still renders the dashboard Service")
	}
	var meta metav1.ObjectMeta = svc.ObjectMeta
	if meta.Namespace != "baregate-system" {
		t.Errorf("namespace %q", meta.Namespace)
	}
}
