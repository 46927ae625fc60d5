package annotations

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Defaults ingress-nginx uses when the annotations are absent.
const (
	defaultBodySize       = 1 << 20
	defaultConnectTimeout = 5 * time.Second
	defaultReadTimeout    = 60 * time.Second
	defaultSendTimeout    = 60 * time.Second
)

func parseBackend(ps *parser, p *Policy, _ Defaults) {
	p.BackendProtocol = "HTTP"
	if v, ok := ps.get("backend-protocol"); ok {
		switch u := strings.ToUpper(v); u {
		case "HTTP", "HTTPS", "GRPC", "GRPCS":
			p.BackendProtocol = u
		default:
			ps.invalid("backend-protocol", fmt.Errorf("%q is not one of HTTP, HTTPS, GRPC, GRPCS (AUTO_HTTP and FCGI are not supported)", v), "using HTTP")
		}
	}
	p.ProxyBodySize = defaultBodySize
	if v, ok := ps.get("proxy-body-size"); ok {
		if n, err := ParseSize(v); err != nil {
			ps.invalid("proxy-body-size", err, "using the default 1m")
		} else {
			p.ProxyBodySize = n
		}
	}
	p.ConnectTimeout = ps.durationOpt("proxy-connect-timeout", defaultConnectTimeout)
	p.ReadTimeout = ps.durationOpt("proxy-read-timeout", defaultReadTimeout)
	p.SendTimeout = ps.durationOpt("proxy-send-timeout", defaultSendTimeout)
	if v, ok := ps.get("proxy-buffering"); ok {
		switch v {
		case "on":
			p.ProxyBuffering = true
		case "off":
		default:
			ps.invalid("proxy-buffering", fmt.Errorf("%q is neither on nor off", v), "not buffering")
		}
	}
	p.SSLPassthrough = ps.boolOpt("ssl-passthrough", false)
	if v, ok := ps.get("upstream-hash-by"); ok {
		if h, err := ParseUpstreamHash(v); err != nil {
			ps.invalid("upstream-hash-by", err, "balancing normally")
		} else {
			p.UpstreamHash = h
		}
	}
}

// UpstreamHash is the key of upstream-hash-by: literal text and nginx variables, concatenated.
type UpstreamHash struct {
	Source string
	parts  []hashPart
}

type hashPart struct {
	lit  string
	kind string // "" for a literal; else request_uri, uri, args, host, remote_addr, http_, cookie_, arg_
	name string // for http_, cookie_, arg_
}

// hashVars are the nginx variables upstream-hash-by may use; prefixed ones take a name.
var hashVars = []string{"request_uri", "remote_addr", "binary_remote_addr", "host", "uri", "args", "http_", "cookie_", "arg_"}

// ParseUpstreamHash reads an upstream-hash-by value such as "$request_uri", "$binary_remote_addr" or
// "$http_x_user$arg_id". It must use at least one variable: a constant key sends everything to one
// endpoint, which is never what was meant.
func ParseUpstreamHash(s string) (*UpstreamHash, error) {
	h := &UpstreamHash{Source: s}
	vars := 0
	for rest := s; rest != ""; {
		i := strings.IndexByte(rest, '$')
		if i != 0 {
			if i < 0 {
				i = len(rest)
			}
			h.parts = append(h.parts, hashPart{lit: rest[:i]})
			rest = rest[i:]
			continue
		}
		j := 1
		for j < len(rest) && isVarChar(rest[j]) {
			j++
		}
		name := strings.ToLower(rest[1:j])
		rest = rest[j:]
		part, ok := hashVar(name)
		if !ok {
			return nil, fmt.Errorf("upstream-hash-by %q: unsupported variable $%s", s, name)
		}
		h.parts = append(h.parts, part)
		vars++
	}
	if vars == 0 {
		return nil, fmt.Errorf("upstream-hash-by %q uses no variable", s)
	}
	return h, nil
}

func hashVar(name string) (hashPart, bool) {
	for _, v := range hashVars {
		if strings.HasSuffix(v, "_") {
			if strings.HasPrefix(name, v) && len(name) > len(v) {
				return hashPart{kind: v, name: name[len(v):]}, true
			}
			continue
		}
		if name == v {
			if v == "binary_remote_addr" {
				v = "remote_addr" // the same key for hashing purposes
			}
			return hashPart{kind: v}, true
		}
	}
	return hashPart{}, false
}

// Key is the hash key of a request from client IP clientIP.
func (h *UpstreamHash) Key(r *http.Request, clientIP string) string {
	var b strings.Builder
	for _, p := range h.parts {
		switch p.kind {
		case "":
			b.WriteString(p.lit)
		case "request_uri":
			b.WriteString(r.URL.RequestURI())
		case "uri":
			b.WriteString(r.URL.Path)
		case "args":
			b.WriteString(r.URL.RawQuery)
		case "host":
			b.WriteString(r.Host)
		case "remote_addr":
			b.WriteString(clientIP)
		case "http_":
			b.WriteString(r.Header.Get(strings.ReplaceAll(p.name, "_", "-")))
		case "cookie_":
			if c, err := r.Cookie(p.name); err == nil {
				b.WriteString(c.Value)
			}
		case "arg_":
			b.WriteString(r.URL.Query().Get(p.name))
		}
	}
	return b.String()
}
