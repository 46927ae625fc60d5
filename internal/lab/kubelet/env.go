package kubelet

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// podAddrs are the addresses a pod's downward-API fields refer to.
type podAddrs struct {
	PodIPs, HostIPs []netip.Addr
}

// containerEnv returns a container's environment as NAME=value lines, in the order Kubernetes
// defines them: HOSTNAME (the pod name, as a container runtime sets it), then the container's env
// with $(VAR) references to earlier variables expanded. A source the lab cannot resolve (ConfigMap,
// Secret, resource fields) is an error, as a missing one is for a kubelet.
func containerEnv(pod *corev1.Pod, c *corev1.Container, addrs podAddrs) ([]string, error) {
	vals := map[string]string{"HOSTNAME": pod.Name}
	order := []string{"HOSTNAME"}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	lookup := func(k string) (string, bool) { v, ok := vals[k]; return v, ok }
	if len(c.EnvFrom) > 0 {
		return nil, fmt.Errorf("container %s: envFrom is not supported by the lab kubelet", c.Name)
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			set(e.Name, expand(e.Value, lookup))
		case e.ValueFrom.FieldRef != nil:
			v, err := fieldValue(pod, e.ValueFrom.FieldRef.FieldPath, addrs)
			if err != nil {
				return nil, fmt.Errorf("container %s: env %s: %w", c.Name, e.Name, err)
			}
			set(e.Name, v)
		default:
			return nil, fmt.Errorf("container %s: env %s: only values and fieldRefs are supported by the lab kubelet", c.Name, e.Name)
		}
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vals[k])
	}
	return out, nil
}

// fieldValue resolves a downward-API fieldRef path.
func fieldValue(pod *corev1.Pod, path string, addrs podAddrs) (string, error) {
	if k, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[k], nil
	}
	if k, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[k], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return first(addrs.PodIPs), nil
	case "status.podIPs":
		return joinAddrs(addrs.PodIPs), nil
	case "status.hostIP":
		return first(addrs.HostIPs), nil
	case "status.hostIPs":
		return joinAddrs(addrs.HostIPs), nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

// subscript parses `prefix['key']`.
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "']")
}

func first(ips []netip.Addr) string {
	if len(ips) == 0 {
		return ""
	}
	return ips[0].String()
}

func joinAddrs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ",")
}

// expand replaces $(NAME) with the value lookup gives, leaves unknown references as written, and
// turns $$ into $, as Kubernetes expands env values, commands and args.
func expand(s string, lookup func(string) (string, bool)) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
				name := s[i+2 : i+2+end]
				if v, ok := lookup(name); ok {
					b.WriteString(v)
				} else {
					b.WriteString(s[i : i+3+end])
				}
				i += 2 + end
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// commandLine is a container's command followed by its args, expanded against its environment.
func commandLine(c *corev1.Container, env []string) []string {
	vals := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	lookup := func(k string) (string, bool) { v, ok := vals[k]; return v, ok }
	var out []string
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		out = append(out, expand(a, lookup))
	}
	return out
}
