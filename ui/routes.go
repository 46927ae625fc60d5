package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
)

//go:embed web
var webFS embed.FS

// contentSecurityPolicy allows only the page's own script, style and API: no inline code, no other
// origin, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func securityHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()")
	c.Next()
}

// readOnly refuses every method but GET and HEAD: the dashboard changes nothing.
func readOnly(c *gin.Context) {
	if c.Request.Method != http.MethodGet && c.Request.Method != http.MethodHead {
		c.Header("Allow", "GET, HEAD")
		c.AbortWithStatusJSON(http.StatusMethodNotAllowed, gin.H{"error": "the dashboard is read-only: only GET and HEAD are allowed"})
		return
	}
	c.Next()
}

func (s *Server) routes() http.Handler {
	gin.SetMode(gin.ReleaseMode) // gin's debug mode prints every route to stdout
	r := gin.New()
	r.Use(gin.Recovery(), securityHeaders, readOnly)
	r.NoRoute(func(c *gin.Context) { c.JSON(http.StatusNotFound, gin.H{"error": "not found"}) })

	web, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	get := func(path string, h gin.HandlerFunc) {
		r.GET(path, h)
		r.HEAD(path, h)
	}
	asset := func(name, contentType string) gin.HandlerFunc {
		data, err := fs.ReadFile(web, name)
		if err != nil {
			panic(err)
		}
		return func(c *gin.Context) {
			c.Header("Cache-Control", "no-cache")
			writeBody(c, contentType, data)
		}
	}
	get("/", asset("index.html", "text/html; charset=utf-8"))
	get("/app.js", asset("app.js", "text/javascript; charset=utf-8"))
	get("/style.css", asset("style.css", "text/css; charset=utf-8"))
	get("/favicon.svg", asset("favicon.svg", "image/svg+xml"))

	api := func(path string, h gin.HandlerFunc) {
		get(path, func(c *gin.Context) {
			c.Header("Cache-Control", "no-store")
			h(c)
		})
	}
	api("/api/map", func(c *gin.Context) { writeJSON(c, s.Map()) })
	api("/api/view", func(c *gin.Context) {
		q, err := parseQuery(c)
		if err != nil {
			c.JSON(http.StatusBadRequest, gin.H{"error": err.Error()})
			return
		}
		writeJSON(c, BuildView(s.Map(), q))
	})
	api("/api/lbips", func(c *gin.Context) { writeJSON(c, nonNil(s.Map().LBIPs)) })
	api("/api/hosts", func(c *gin.Context) { writeJSON(c, nonNil(s.Map().Hosts)) })
	api("/api/noendpoints", func(c *gin.Context) { writeJSON(c, nonNil(s.Map().NoEndpoints)) })
	api("/api/warnings", func(c *gin.Context) { writeJSON(c, s.warn.get()) })
	api("/api/status", func(c *gin.Context) {
		cur := s.current.Load()
		writeJSON(c, gin.H{
			"generation": cur.m.Generation, "version": cur.version, "gateway": cur.m.Gateway, "taken": cur.m.Taken,
			"forwarding": cur.m.Forwarding, "streams": s.hub.count(),
			"sources": gin.H{"announcements": s.sources.Announcements != nil, "forwarding": s.sources.Forwarding != nil, "routes": s.sources.Routes != nil},
		})
	})
	api("/api/events", s.stream)
	return r
}

// writeBody answers with data, or with its headers alone for HEAD.
func writeBody(c *gin.Context, contentType string, data []byte) {
	if c.Request.Method == http.MethodHead {
		c.Header("Content-Type", contentType)
		c.Header("Content-Length", strconv.Itoa(len(data)))
		c.Status(http.StatusOK)
		return
	}
	c.Data(http.StatusOK, contentType, data)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
