package member

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"github.com/baregate/baregate/lbip/internal/nettest"
)

// startMembers starts n members on loopback, each told about the others, and waits until every one
// sees all n live.
func startMembers(t *testing.T, n int, secret []byte) []*Member {
	t.Helper()
	logger, _ := ktesting.NewTestContext(t)
	var ms []*Member
	peers := map[string]string{}
	for i := range n {
		m := New(Config{BindAddr: "127.0.0.1", BindPort: 0, SecretKey: secret, RejoinInterval: 200 * time.Millisecond}, fmt.Sprintf("node-%d", i), logger)
		if err := m.Ready(); err == nil {
			t.Fatalf("member ready before Start")
		}
		if err := m.SetMeta([]byte(fmt.Sprintf("meta-%d", i))); err != nil {
			t.Fatal(err)
		}
		if err := m.Start("127.0.0.1"); err != nil {
			t.Fatal(err)
		}
		peers[m.name] = fmt.Sprintf("127.0.0.1:%d", m.Port())
		ms = append(ms, m)
	}
	for _, m := range ms {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); m.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		m.SetPeers(peers)
	}
	want := slices.Sorted(maps.Keys(peers))
	for _, m := range ms {
		nettest.Eventually(t, 10*time.Second, func() string {
			if got := slices.Sorted(maps.Keys(m.LiveNodes())); !slices.Equal(got, want) {
				return fmt.Sprintf("%s sees %v live, want %v", m.name, got, want)
			}
			return ""
		})
		if err := m.Ready(); err != nil {
			t.Errorf("%s joined but not ready: %v", m.name, err)
		}
	}
	return ms
}

func TestKilledMemberDeclaredDead(t *testing.T) {
	ms := startMembers(t, 3, nil)
	if got := string(ms[0].Meta()["node-2"]); got != "meta-2" {
		t.Errorf("node-0 sees node-2's metadata %q, want meta-2", got)
	}
	select {
	case <-ms[0].Changed():
	default:
		t.Errorf("Changed not signalled after members joined")
	}
	// A crash: no leave message, the others must find out by probing.
	if err := ms[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:2] {
		nettest.Eventually(t, 10*time.Second, func() string {
			if live := m.LiveNodes(); live["node-2"] || !live["node-0"] || !live["node-1"] {
				return fmt.Sprintf("%s sees %v live, want node-0 and node-1", m.name, live)
			}
			return ""
		})
	}
}

func TestMetadataUpdateSpreads(t *testing.T) {
	ms := startMembers(t, 2, nil)
	if err := ms[1].SetMeta([]byte("new")); err != nil {
		t.Fatal(err)
	}
	nettest.Eventually(t, 10*time.Second, func() string {
		if got := string(ms[0].Meta()["node-1"]); got != "new" {
			return fmt.Sprintf("node-0 sees node-1's metadata %q, want new", got)
		}
		return ""
	})
}

func TestEncryptedGossipKeepsStrangersOut(t *testing.T) {
	key := []byte("0123456789abcdef")
	ms := startMembers(t, 2, key)
	logger, _ := ktesting.NewTestContext(t)
	stranger := New(Config{BindAddr: "127.0.0.1", SecretKey: []byte("fedcba9876543210")}, "stranger", logger)
	if err := stranger.Start("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stranger.Shutdown() })
	stranger.SetPeers(map[string]string{"node-0": fmt.Sprintf("127.0.0.1:%d", ms[0].Port())})
	stranger.joinMissing()
	if live := ms[0].LiveNodes(); live["stranger"] {
		t.Fatalf("a member with another key joined: %v", live)
	}
	if live := stranger.LiveNodes(); len(live) != 1 {
		t.Fatalf("stranger sees %v, want only itself", live)
	}
}

func TestAloneIsReady(t *testing.T) {
	logger, _ := ktesting.NewTestContext(t)
	m := New(Config{BindAddr: "127.0.0.1", AloneGrace: 300 * time.Millisecond}, "only", logger)
	if err := m.Start("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	if err := m.Ready(); err == nil {
		t.Fatalf("ready before trying to join")
	}
	m.SetPeers(map[string]string{"only": "127.0.0.1:1"})
	m.joinMissing()
	if err := m.Ready(); err != nil {
		t.Fatalf("knows no other peer, tried, but not ready: %v", err)
	}

	// Knowing of a peer that does not answer, it waits out the grace before serving alone.
	lonely := New(Config{BindAddr: "127.0.0.1", AloneGrace: time.Second}, "lonely", logger)
	if err := lonely.Start("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	// Peers are known before Run, as the first snapshot gives them in the gateway.
	lonely.SetPeers(map[string]string{"lonely": "127.0.0.1:1", "gone": "127.0.0.1:2"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); lonely.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Within the grace it reports waiting for its peer.
	nettest.Eventually(t, 10*time.Second, func() string {
		if err := lonely.Ready(); err == nil || !strings.Contains(err.Error(), "serving alone in") {
			return fmt.Sprintf("Ready() = %v, want it waiting out the grace", err)
		}
		return ""
	})
	<-lonely.Changed() // the joined-itself signal
	nettest.Eventually(t, 10*time.Second, func() string {
		if err := lonely.Ready(); err != nil {
			return err.Error()
		}
		return ""
	})
	if live := lonely.LiveNodes(); !live["lonely"] || len(live) != 1 {
		t.Fatalf("LiveNodes = %v, want only itself", live)
	}
}

func TestParseSecret(t *testing.T) {
	a, err := ParseSecret([]byte("correct horse\n"))
	if err != nil || len(a) != 32 {
		t.Fatalf("ParseSecret = %x, %v; want a 32-byte key", a, err)
	}
	if b, _ := ParseSecret([]byte(" correct horse")); string(a) != string(b) {
		t.Errorf("surrounding white space changed the key")
	}
	if c, _ := ParseSecret([]byte("correct horsf")); string(a) == string(c) {
		t.Errorf("different secrets gave the same key")
	}
	if _, err := ParseSecret([]byte(" \n")); err == nil {
		t.Errorf("an empty secret was accepted")
	}
}
