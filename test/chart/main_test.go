// Package chart runs the gateway in a lab exactly as the Helm chart deploys it: the chart's objects
// applied to the lab's API server, and the gateways started with the chart's ServiceAccount token and
// its DaemonSet's arguments, so the chart's RBAC is proven by a working cluster rather than read.
package chart

import (
	"os"
	"testing"

	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/test/e2e/framework"
)

// The gateways start inside the test, once the chart's ServiceAccount exists.
var env = framework.New(lab.Options{ID: "chart", Nodes: 2, Clients: 1})

func TestMain(m *testing.M) { os.Exit(env.Main(m)) }
