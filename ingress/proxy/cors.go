package proxy

import (
	"net/http"
	"strings"
)

// corsSet holds the CORS headers the proxy put on a response (cors-* annotations) while the
// backend's headers are copied over it.
type corsSet struct {
	hdr  http.Header
	vary []string
}

// takeCORS saves the CORS headers already set on dst, if any.
func takeCORS(dst http.Header) *corsSet {
	if _, ok := dst["Access-Control-Allow-Origin"]; !ok {
		return nil
	}
	c := &corsSet{hdr: http.Header{}, vary: dst["Vary"]}
	for k, v := range dst {
		if strings.HasPrefix(k, "Access-Control-") {
			c.hdr[k] = v
		}
	}
	return c
}

// restore puts the saved CORS headers back over the backend's: the annotation's values win, as
// ingress-nginx sets them with more_set_headers. Vary keeps the backend's fields and gains the
// proxy's (Origin), so that caches keep the answers to different origins apart.
func (c *corsSet) restore(dst http.Header) {
	if c == nil {
		return
	}
	for k, v := range c.hdr {
		dst[k] = v
	}
	for _, v := range c.vary {
		if !hasToken(dst["Vary"], v) {
			dst["Vary"] = append(dst["Vary"], v)
		}
	}
}

func hasToken(fields []string, tok string) bool {
	for _, f := range fields {
		for _, t := range strings.Split(f, ",") {
			if t = strings.TrimSpace(t); t == "*" || strings.EqualFold(t, tok) {
				return true
			}
		}
	}
	return false
}
