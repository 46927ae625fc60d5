package echo

import (
	"strings"
)

// Program is the name under which `baregate-lab pod-run` runs Main.
const Program = "echo"

// isEchoImage reports whether containers of an image repository (without tag or digest) run the echo
// program unchanged.
func isEchoImage(repo string) bool {
	switch repo {
	case "echo",
		"k8s.gcr.io/ingressconformance/echoserver",
		"registry.k8s.io/ingressconformance/echoserver",
		"registry.k8s.io/gateway-api/conformance/echo-basic",
		"gcr.io/k8s-staging-gateway-api/echo-basic":
		return true
	}
	return false
}

const agnhostImage = "registry.k8s.io/e2e-test-images/agnhost"

// ProgramFor maps a container image and its command line (command followed by args) to a built-in
// program and its arguments. ok is false for images the lab cannot run.
//
// agnhost runs its netexec and serve-hostname modes; their flags are translated to echo's, and
// flags echo does not know are dropped, since upstream workloads pass many that do not matter here.
func ProgramFor(image string, args []string) (program string, progArgs []string, ok bool) {
	repo := imageRepo(image)
	if isEchoImage(repo) {
		return Program, nil, true
	}
	if repo != agnhostImage {
		return "", nil, false
	}
	if len(args) > 0 && (args[0] == "/agnhost" || args[0] == "agnhost") {
		args = args[1:]
	}
	if len(args) == 0 {
		return "", nil, false
	}
	switch args[0] {
	case "netexec":
		out := []string{}
		http, udp := "8080", "8081"
		for _, a := range args[1:] {
			name, val, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			switch name {
			case "http-port":
				http = val
			case "udp-port":
				udp = val
			case "delay-shutdown":
				out = append(out, "--delay-shutdown="+val)
			}
		}
		return Program, append([]string{"--port=" + http, "--udp-port=" + udp}, out...), true
	case "serve-hostname":
		port := "9376"
		for _, a := range args[1:] {
			if name, val, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); name == "port" {
				port = val
			}
		}
		return Program, []string{"--mode=hostname", "--port=" + port}, true
	}
	return "", nil, false
}

// imageRepo strips the tag and digest from an image reference, keeping the registry and path.
func imageRepo(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	// A colon after the last slash is a tag; one before it belongs to a registry port.
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}
