package route

import (
	"fmt"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
)

// regexChars are characters that make an ImplementationSpecific path look like a regular expression
// (ingress-nginx's use-regex). Matching such a path as a literal prefix would silently route nothing,
// so it is reported instead.
const regexChars = `*^$|()[]{}\`

// matchKind maps an Ingress path type to the matcher's Exact or Prefix, with ImplementationSpecific
// meaning Prefix. A missing path type (not allowed by the v1 API) is treated the same way.
func matchKind(pt *networkingv1.PathType) string {
	if pt != nil && *pt == networkingv1.PathTypeExact {
		return Exact
	}
	return Prefix
}

// pathTypeName is the path type as written, for status and dashboards.
func pathTypeName(pt *networkingv1.PathType) string {
	if pt == nil {
		return string(networkingv1.PathTypeImplementationSpecific)
	}
	return string(*pt)
}

// checkPath reports why a path cannot be routed, or nil. The API server validates Exact and Prefix
// paths already; this guards against objects from older servers and against ImplementationSpecific
// paths written for other controllers.
func checkPath(path string, pt *networkingv1.PathType, regex bool) error {
	if pt != nil {
		switch *pt {
		case networkingv1.PathTypeExact, networkingv1.PathTypePrefix, networkingv1.PathTypeImplementationSpecific:
		default:
			return fmt.Errorf("path %q has unknown path type %q", path, *pt)
		}
	}
	if path == "" {
		if pt != nil && *pt != networkingv1.PathTypeImplementationSpecific {
			return fmt.Errorf("a %s path must not be empty", *pt)
		}
		return nil // empty ImplementationSpecific means "/"
	}
	if path[0] != '/' {
		return fmt.Errorf("path %q does not start with /", path)
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c < 0x21 || c == 0x7f || c == '?' || c == '#' {
			return fmt.Errorf("path %q contains %q, which no request path can", path, c)
		}
	}
	if !regex && (pt == nil || *pt == networkingv1.PathTypeImplementationSpecific) {
		if strings.ContainsAny(path, regexChars) {
			return fmt.Errorf("path %q looks like a regular expression; baregate matches ImplementationSpecific paths as Prefix paths unless nginx.ingress.kubernetes.io/use-regex is \"true\"", path)
		}
	}
	return nil
}

// pathKey is the form a path is stored under: Prefix paths lose trailing slashes, since "/foo/"
// and "/foo" match the same requests element by element.
func pathKey(kind, path string) string {
	if path == "" {
		return "/"
	}
	if kind == Prefix {
		if p := strings.TrimRight(path, "/"); p != "" {
			return p
		}
		return "/"
	}
	return path
}

// checkHost reports why a rule host cannot be matched, or nil: hosts are DNS names, optionally with
// a wildcard as the whole first label.
func checkHost(host string) error {
	name := strings.TrimPrefix(host, "*.")
	if name == "" || len(host) > 253 {
		return fmt.Errorf("host %q is not a DNS name", host)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("host %q has an empty or too long label", host)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c >= 'A' && c <= 'Z' || c == '_'
			if !ok {
				return fmt.Errorf("host %q contains %q; wildcards may only be the whole first label", host, c)
			}
		}
	}
	return nil
}
