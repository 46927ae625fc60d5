// Package framework runs end-to-end tests in a lab: one lab per test package (brought up by the first
// test that asks for it, removed at the end, leftovers of a crashed run removed first) and helpers bound to each test.
package framework

import (
	"context"
	"flag"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/internal/testutil"
)

// Env is a test package's lab. Declare one in the package's test code and call Main from TestMain:
//
//	var env = framework.New(lab.Options{ID: "e2e", StartGateway: true})
//	func TestMain(m *testing.M) { os.Exit(env.Main(m)) }
type Env struct {
	opts lab.Options
	// up brings the lab up once, for the first test that needs it, so a run whose -run matches no
	// lab test (a compile check) never touches a lab, not even one of the same ID that another run uses.
	up   sync.Once
	main bool
	lab  *lab.Lab
	// skip is why the lab was not brought up (not root, -short); tests skip, or fail under CI.
	skip string
	// upErr is why the lab failed to come up; every test fails with it.
	upErr error
}

// New prepares an Env; nothing starts until Main.
func New(o lab.Options) *Env { return &Env{opts: o} }

// Main runs the tests and brings the lab down if one came up; it returns the exit code for os.Exit.
func (e *Env) Main(m *testing.M) int {
	e.main = true
	flag.Parse()
	switch {
	case testing.Short():
		e.skip = "end-to-end tests bring up a lab; skipped with -short"
	case os.Geteuid() != 0:
		e.skip = "end-to-end tests need root (network namespaces); run make test as root"
	default:
		for _, tool := range []string{"ip", "curl", "ping"} {
			if _, err := exec.LookPath(tool); err != nil {
				e.skip = tool + " is not installed (make deps)"
			}
		}
	}
	if id := os.Getenv("BAREGATE_LAB_ID"); id != "" {
		// Lets two runs of the same package share a machine (each lab's namespaces carry its ID).
		e.opts.ID = id
	}
	code := m.Run()
	if e.lab != nil {
		if err := e.lab.Down(); err != nil {
			fmt.Fprintln(os.Stderr, "removing the lab:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Lab is the package's lab for test t, or skips/fails t when there is none.
func (e *Env) Lab(t testing.TB) *T {
	t.Helper()
	if !e.main {
		t.Fatal("framework: Env.Main was not called from TestMain")
	}
	if e.skip != "" {
		testutil.SkipOrFail(t, e.skip)
	}
	e.up.Do(e.bringUp)
	if e.upErr != nil {
		t.Fatalf("the lab did not come up: %v", e.upErr)
	}
	if err := e.lab.Err(); err != nil {
		t.Fatalf("the lab is broken: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &T{Lab: e.lab, t: t, Ctx: ctx}
}

func (e *Env) bringUp() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	e.lab, e.upErr = lab.Up(ctx, e.opts)
	if e.upErr == nil {
		fmt.Fprintf(os.Stderr, "lab %q up in %s\n", e.lab.Options().ID, time.Since(start).Round(100*time.Millisecond))
	}
}

// uniqueName is a DNS label unique to a test name, for namespaces and objects of parallel tests.
func uniqueName(prefix, testName string) string {
	h := fnv.New32a()
	h.Write([]byte(testName))
	return fmt.Sprintf("%s-%08x", prefix, h.Sum32())
}
