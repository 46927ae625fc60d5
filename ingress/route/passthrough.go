package route

import "strings"

// Passthrough returns the backend that TLS connections for serverName are spliced to without
// terminating them, when the Ingress owning the host has ssl-passthrough; nil otherwise. As in
// ingress-nginx, the host's "/" path names the backend (else its first route): paths cannot be
// seen inside an unterminated connection.
func (t *Table) Passthrough(serverName string) *Backend {
	if t == nil {
		return nil
	}
	host := NormalizeHost(serverName)
	if host == "" {
		return nil
	}
	if hr := t.exact[host]; hr != nil {
		return hr.passthrough()
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		if hr := t.wildcard[host[i+1:]]; hr != nil {
			return hr.passthrough()
		}
	}
	return nil
}

// HasPassthrough reports whether any host of the table has ssl-passthrough, so the TLS listener
// only looks into ClientHellos when there is a reason to.
func (t *Table) HasPassthrough() bool {
	if t == nil {
		return false
	}
	for _, r := range t.Routes {
		if passthrough(r) {
			return true
		}
	}
	return false
}

func (h *hostRoutes) passthrough() *Backend {
	r := h.prefix["/"]
	if r == nil {
		r = h.exact["/"]
	}
	if r == nil {
		for _, m := range []map[string]*Route{h.prefix, h.exact} {
			for _, c := range m {
				if r == nil || c.ID < r.ID {
					r = c
				}
			}
		}
	}
	if r == nil || !passthrough(r) {
		return nil
	}
	return r.Backend
}

func passthrough(r *Route) bool {
	return r.Policy != nil && r.Policy.Nginx != nil && r.Policy.Nginx.SSLPassthrough
}
