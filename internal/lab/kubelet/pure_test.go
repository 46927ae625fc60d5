package kubelet

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
)

var (
	v4 = netip.MustParsePrefix("198.18.1.0/24")
	v6 = netip.MustParsePrefix("2001:db8:1:1::/64")
)

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func TestIPAllocator(t *testing.T) {
	a := newIPAllocator([]netip.Prefix{v4, v6})
	got, err := a.Allocate("a", nil)
	if err != nil || !slices.Equal(got, addrs("198.18.1.2", "2001:db8:1:1::2")) {
		t.Fatalf("first pod: %v %v", got, err)
	}
	got, _ = a.Allocate("b", nil)
	if !slices.Equal(got, addrs("198.18.1.3", "2001:db8:1:1::3")) {
		t.Errorf("second pod: %v", got)
	}
	// A preferred address is kept when free, refused when taken, the gateway or outside the range.
	got, _ = a.Allocate("c", addrs("198.18.1.77", "2001:db8:1:1::3"))
	if !slices.Equal(got, addrs("198.18.1.77", "2001:db8:1:1::4")) {
		t.Errorf("preferred: %v", got)
	}
	got, _ = a.Allocate("d", addrs("198.18.1.1", "198.18.1.255", "198.18.2.5", "2001:db8:1:1::1"))
	if !slices.Equal(got, addrs("198.18.1.4", "2001:db8:1:1::5")) {
		t.Errorf("unusable preferences: %v", got)
	}
	a.Release("a")
	got, _ = a.Allocate("e", nil)
	if !slices.Equal(got, addrs("198.18.1.2", "2001:db8:1:1::2")) {
		t.Errorf("after release: %v", got)
	}
	// Allocating again for the same pod gives back its own addresses.
	got, _ = a.Allocate("e", got)
	if !slices.Equal(got, addrs("198.18.1.2", "2001:db8:1:1::2")) {
		t.Errorf("same pod again: %v", got)
	}
}

func TestIPAllocatorFull(t *testing.T) {
	a := newIPAllocator([]netip.Prefix{netip.MustParsePrefix("198.18.0.0/29")}) // .2-.6 usable
	for i := range 5 {
		if _, err := a.Allocate(types.UID(rune('a'+i)), nil); err != nil {
			t.Fatalf("pod %d: %v", i, err)
		}
	}
	if got, err := a.Allocate("z", nil); err == nil {
		t.Fatalf("allocated %v from a full range", got)
	}
	if a.usable(netip.MustParsePrefix("198.18.0.0/29"), netip.MustParseAddr("198.18.0.7")) {
		t.Error("broadcast address usable")
	}
}

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "demo", UID: "u-1",
			Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"a/b": "c"}},
		Spec: corev1.PodSpec{NodeName: "node1", ServiceAccountName: "default"},
	}
}

func TestContainerEnv(t *testing.T) {
	field := func(p string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: p}}
	}
	c := &corev1.Container{Name: "echo", Env: []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: field("metadata.name")},
		{Name: "NAMESPACE", ValueFrom: field("metadata.namespace")},
		{Name: "POD_IP", ValueFrom: field("status.podIP")},
		{Name: "POD_IPS", ValueFrom: field("status.podIPs")},
		{Name: "HOST_IP", ValueFrom: field("status.hostIP")},
		{Name: "NODE", ValueFrom: field("spec.nodeName")},
		{Name: "APP", ValueFrom: field("metadata.labels['app']")},
		{Name: "ANN", ValueFrom: field("metadata.annotations['a/b']")},
		{Name: "GREETING", Value: "hi $(POD_NAME) on $(NODE), $$(NODE) $(UNKNOWN)"},
		{Name: "HOSTNAME", Value: "override"},
	}}
	got, err := containerEnv(testPod(), c, podAddrs{PodIPs: addrs("198.18.1.2", "2001:db8:1:1::2"), HostIPs: addrs("192.0.2.11")})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"HOSTNAME=override", "POD_NAME=web-1", "NAMESPACE=demo", "POD_IP=198.18.1.2",
		"POD_IPS=198.18.1.2,2001:db8:1:1::2", "HOST_IP=192.0.2.11", "NODE=node1", "APP=web", "ANN=c",
		"GREETING=hi web-1 on node1, $(NODE) $(UNKNOWN)"}
	if !slices.Equal(got, want) {
		t.Errorf("env\n got %q\nwant %q", got, want)
	}
	c.Args = []string{"--name=$(POD_NAME)", "$$(x)"}
	c.Command = []string{"/agnhost"}
	if got := commandLine(c, want); !slices.Equal(got, []string{"/agnhost", "--name=web-1", "$(x)"}) {
		t.Errorf("command line %q", got)
	}

	for _, bad := range []corev1.EnvVar{
		{Name: "X", ValueFrom: field("status.phase")},
		{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}},
	} {
		if _, err := containerEnv(testPod(), &corev1.Container{Name: "c", Env: []corev1.EnvVar{bad}}, podAddrs{}); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

func FuzzExpand(f *testing.F) {
	for _, s := range []string{"$(A)", "$$(A)", "$(", "a$", "$(A)$(B)x", "$()"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		none := func(string) (string, bool) { return "", false }
		// With nothing defined, only $$ changes.
		if got, want := expand(s, none), expand(s, func(k string) (string, bool) { return "$(" + k + ")", true }); got != want {
			t.Fatalf("expand(%q): unknown refs %q differ from self refs %q", s, got, want)
		}
	})
}

func TestProbeTracker(t *testing.T) {
	tests := []struct {
		name               string
		success, failure   int32
		outcomes           []bool
		wantReadyAfterEach []bool
	}{
		{"defaults", 0, 0, []bool{false, true, false, true}, []bool{false, true, false, true}},
		{"success threshold 2", 2, 1, []bool{true, true, false, true, true}, []bool{false, true, false, false, true}},
		{"failure threshold 3", 1, 3, []bool{true, false, false, true, false, false, false}, []bool{true, true, true, true, true, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newProbeTracker(&corev1.Probe{SuccessThreshold: tt.success, FailureThreshold: tt.failure})
			for i, ok := range tt.outcomes {
				before := p.ready
				changed := p.observe(ok)
				if p.ready != tt.wantReadyAfterEach[i] || changed != (before != p.ready) {
					t.Fatalf("after outcome %d (%v): ready %v changed %v, want ready %v", i, ok, p.ready, changed, tt.wantReadyAfterEach[i])
				}
			}
		})
	}
}

func TestResolvePort(t *testing.T) {
	c := &corev1.Container{Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}
	if p, err := resolvePort(intstr.FromString("http"), c); err != nil || p != 8080 {
		t.Errorf("named: %d %v", p, err)
	}
	if p, err := resolvePort(intstr.FromInt32(3000), c); err != nil || p != 3000 {
		t.Errorf("number: %d %v", p, err)
	}
	for _, bad := range []intstr.IntOrString{intstr.FromString("grpc"), intstr.FromInt32(0), intstr.FromInt32(70000)} {
		if _, err := resolvePort(bad, c); err == nil {
			t.Errorf("accepted %v", bad)
		}
	}
	if a, _ := probeAddr("", intstr.FromInt32(80), c, netip.MustParseAddr("2001:db8:1:1::2")); a != "[2001:db8:1:1::2]:80" {
		t.Errorf("v6 probe address %q", a)
	}
}

func TestBuildStatus(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 500, time.UTC)
	t1 := t0.Add(5 * time.Second)
	cur := corev1.PodStatus{QOSClass: corev1.PodQOSBestEffort, Phase: corev1.PodPending}
	v := podView{Started: t0, PodIPs: addrs("198.18.1.2", "2001:db8:1:1::2"), HostIPs: addrs("192.0.2.11"),
		Containers: []containerView{{Name: "echo", Image: "echo", ID: "lab://42", Running: true, StartedAt: t0}}}

	st := buildStatus(cur, v, t0)
	if st.Phase != corev1.PodRunning || st.PodIP != "198.18.1.2" || len(st.PodIPs) != 2 || st.HostIP != "192.0.2.11" || st.QOSClass != corev1.PodQOSBestEffort {
		t.Fatalf("running, not ready: %+v", st)
	}
	if cond(st, corev1.PodReady) != corev1.ConditionFalse || st.ContainerStatuses[0].State.Running == nil {
		t.Errorf("not ready yet: %+v", st)
	}

	v.Containers[0].Ready = true
	st2 := buildStatus(st, v, t1)
	if cond(st2, corev1.PodReady) != corev1.ConditionTrue || cond(st2, corev1.ContainersReady) != corev1.ConditionTrue {
		t.Errorf("ready: %+v", st2.Conditions)
	}
	for _, c := range st2.Conditions {
		want := secs(t0)
		if c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
			want = secs(t1)
		}
		if !c.LastTransitionTime.Equal(&want) {
			t.Errorf("condition %s moved at %v, want %v", c.Type, c.LastTransitionTime, want)
		}
	}
	// Building again with no change gives an equal status: the kubelet then writes nothing.
	if st3 := buildStatus(st2, v, t1.Add(time.Minute)); !equalStatus(st2, st3) {
		t.Errorf("unchanged view changed the status:\n%+v\n%+v", st2, st3)
	}

	// A container that exited and will not restart: the pod fails, no longer ready.
	v.Containers[0] = containerView{Name: "echo", Image: "echo", Exited: &exit{Code: 2, Reason: "Error", StartedAt: t0, Finished: t1}}
	v.Finished = true
	st4 := buildStatus(st2, v, t1)
	if st4.Phase != corev1.PodFailed || cond(st4, corev1.PodReady) != corev1.ConditionFalse ||
		st4.ContainerStatuses[0].State.Terminated == nil || st4.ContainerStatuses[0].State.Terminated.ExitCode != 2 {
		t.Errorf("failed pod: %+v", st4)
	}
	v.Containers[0].Exited.Code = 0
	if st5 := buildStatus(st2, v, t1); st5.Phase != corev1.PodSucceeded {
		t.Errorf("phase %s, want Succeeded", st5.Phase)
	}

	// A container that cannot start waits with the reason.
	v = podView{Started: t0, Containers: []containerView{{Name: "x", Waiting: "CreateContainerConfigError", WaitingMsg: "bad env"}}}
	st6 := buildStatus(cur, v, t0)
	if w := st6.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != "CreateContainerConfigError" || cond(st6, corev1.PodReady) != corev1.ConditionFalse {
		t.Errorf("waiting container: %+v", st6.ContainerStatuses)
	}
}

func cond(st corev1.PodStatus, typ corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

func TestConfigValidate(t *testing.T) {
	good := Config{NodeName: "n1", Netns: "ns", PodBridge: "cbr0", Self: "/bin/lab", StateDir: "/tmp/x",
		PodCIDRs: []netip.Prefix{v4, v6}, NodeIPs: addrs("192.0.2.11"), Client: fake.NewClientset()}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"no node":     func(c *Config) { c.NodeName = "" },
		"no client":   func(c *Config) { c.Client = nil },
		"no cidr":     func(c *Config) { c.PodCIDRs = nil },
		"two v4":      func(c *Config) { c.PodCIDRs = []netip.Prefix{v4, netip.MustParsePrefix("198.18.2.0/24")} },
		"host bits":   func(c *Config) { c.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("198.18.1.5/24")} },
		"no room":     func(c *Config) { c.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("198.18.1.5/32")} },
		"no node ips": func(c *Config) { c.NodeIPs = nil },
	} {
		c := good
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
