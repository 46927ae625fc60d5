package echo

import (
	"slices"
	"strings"
	"testing"
)

func TestProgramFor(t *testing.T) {
	tests := []struct {
		image    string
		args     []string
		wantArgs []string
		wantOK   bool
	}{
		{image: "echo", wantOK: true},
		{image: "echo:latest", wantOK: true},
		{image: "k8s.gcr.io/ingressconformance/echoserver:v0.0.1", wantOK: true},
		{image: "registry.k8s.io/gateway-api/conformance/echo-basic:v20240412-v1.0.0-394-g40c666fd", wantOK: true},
		{image: "registry.k8s.io/gateway-api/conformance/echo-basic@sha256:0123", wantOK: true},
		{image: "registry.k8s.io/e2e-test-images/agnhost:2.53", args: []string{"netexec", "--http-port=80", "--udp-port=81"},
			wantArgs: []string{"--port=80", "--udp-port=81"}, wantOK: true},
		{image: "registry.k8s.io/e2e-test-images/agnhost:2.53", args: []string{"/agnhost", "netexec"},
			wantArgs: []string{"--port=8080", "--udp-port=8081"}, wantOK: true},
		{image: "registry.k8s.io/e2e-test-images/agnhost:2.53", args: []string{"netexec", "--http-port=8080", "--delay-shutdown=5", "--sctp-port=9"},
			wantArgs: []string{"--port=8080", "--udp-port=8081", "--delay-shutdown=5"}, wantOK: true},
		{image: "registry.k8s.io/e2e-test-images/agnhost:2.53", args: []string{"serve-hostname", "--port=9000"},
			wantArgs: []string{"--mode=hostname", "--port=9000"}, wantOK: true},
		{image: "registry.k8s.io/e2e-test-images/agnhost:2.53", args: []string{"pause"}},
		{image: "registry.k8s.io/e2e-test-images/agnhost:2.53"},
		{image: "nginx:1.27"},
		{image: "localhost:5000/echo"},
		{image: "docker.io/library/echo"},
	}
	for _, tt := range tests {
		t.Run(tt.image+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			prog, args, ok := ProgramFor(tt.image, tt.args)
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if !ok {
				return
			}
			if prog != Program {
				t.Errorf("program = %q, want %q", prog, Program)
			}
			if !slices.Equal(args, tt.wantArgs) && !(len(args) == 0 && len(tt.wantArgs) == 0) {
				t.Errorf("args = %q, want %q", args, tt.wantArgs)
			}
			// Whatever ProgramFor hands out, the echo program must accept.
			if _, err := ParseArgs(args, func(string) string { return "" }); err != nil {
				t.Errorf("echo rejects the translated arguments: %v", err)
			}
		})
	}
}

func FuzzProgramFor(f *testing.F) {
	f.Add("registry.k8s.io/e2e-test-images/agnhost:2.53", "netexec --http-port=8080")
	f.Add("localhost:5000/x/y:tag@sha256:1", "")
	f.Add("echo", "--port=1")
	f.Fuzz(func(t *testing.T, image, cmdline string) {
		prog, args, ok := ProgramFor(image, strings.Fields(cmdline))
		if !ok {
			return
		}
		if prog != Program {
			t.Fatalf("program %q", prog)
		}
		if !strings.HasPrefix(image, imageRepo(image)) {
			t.Fatalf("imageRepo(%q) = %q is not a prefix", image, imageRepo(image))
		}
		_ = args
	})
}

func TestParseArgs(t *testing.T) {
	env := map[string]string{"POD_NAME": "web-1", "NAMESPACE": "demo", "INGRESS_NAME": "ing", "SERVICE_NAME": "svc"}
	cfg, err := ParseArgs(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Ports, []int{3000, 8080}) || cfg.Mode != ModeEcho {
		t.Errorf("defaults: ports %v mode %q", cfg.Ports, cfg.Mode)
	}
	if want := (Names{Pod: "web-1", Namespace: "demo", Ingress: "ing", Service: "svc"}); cfg.Names != want {
		t.Errorf("names = %+v, want %+v", cfg.Names, want)
	}
	cfg, err = ParseArgs([]string{"--port=80", "--port", "81", "--udp-port=53", "--delay-shutdown=2"},
		func(k string) string { return map[string]string{"HOSTNAME": "host-pod"}[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Ports, []int{80, 81}) || !slices.Equal(cfg.UDPPorts, []int{53}) || cfg.DelayShutdown.Seconds() != 2 {
		t.Errorf("parsed %+v", cfg)
	}
	if cfg.Names.Pod != "host-pod" {
		t.Errorf("pod name falls back to HOSTNAME: got %q", cfg.Names.Pod)
	}
	for _, bad := range [][]string{{"--mode=fancy"}, {"--port=70000"}, {"--port=-1"}, {"stray"}, {"--nope"}, {"--delay-shutdown=-1"}} {
		if _, err := ParseArgs(bad, func(string) string { return "" }); err == nil {
			t.Errorf("ParseArgs(%q) accepted", bad)
		}
	}
}
