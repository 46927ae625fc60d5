// Package e2e holds the end-to-end tests that run in one lab per package run: the lab's self-tests here,
// the components' tests beside them.
package e2e

import (
	"os"
	"testing"

	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/test/e2e/framework"
)

var env = framework.New(lab.Options{ID: "e2e", Nodes: 2, Clients: 1, StartGateway: true})

func TestMain(m *testing.M) { os.Exit(env.Main(m)) }
