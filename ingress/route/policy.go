package route

import networkingv1 "k8s.io/api/networking/v1"

// Policy holds the per-route options that annotations set (timeouts, redirects, rewrites, auth ...).
// It is the seam for annotation support: each option is a field here, filled by a pure parser in
// policyFor and honoured by the proxy, so the matcher never changes. Routes of one Ingress share one
// Policy. The zero value means the proxy's defaults.
type Policy struct {
	// Annotations are the Ingress's annotations the policy was parsed from, kept so that a parser
	// added later can be checked against the exact input it saw.
	Annotations map[string]string
}

// policy parses the Policy of an Ingress. Parsers report bad values as Problems on that Ingress and
// leave the option at its default.
func (s *buildState) policy(ing *networkingv1.Ingress) *Policy {
	return &Policy{Annotations: ing.Annotations}
}
