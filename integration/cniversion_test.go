package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/loomnet/loom/integration/rig"
)

// TestCNISpecVersions attaches pods with the conflist pinned to each spec
// version a runtime may speak: the plugin answers each with a result of
// that version, and CHECK and DEL work with it. The conflist loomd writes
// offers 1.0.0 and 1.1.0; libcni picks the newest it knows.
func TestCNISpecVersions(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	server := addPod(t, nodes[1], "server")
	written, err := os.ReadFile(filepath.Join(nodes[0].ConfDir, "10-loom.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"cniVersion": "1.0.0"`, `"cniVersions": [`, `"1.1.0"`, `"type": "loom"`} {
		if !strings.Contains(string(written), want) {
			t.Fatalf("conflist lacks %s:\n%s", want, written)
		}
	}
	loaded, err := libcni.ConfListFromBytes(written)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.CNIVersion != "1.1.0" {
		t.Fatalf("libcni negotiated %s from the written conflist, want 1.1.0", loaded.CNIVersion)
	}
	cni, _, err := nodes[0].CNI()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			conf := fmt.Sprintf(`{"cniVersion":%q,"name":"loom","plugins":[{"type":"loom","socket":%q}]}`, v, nodes[0].Socket)
			list, err := libcni.ConfListFromBytes([]byte(conf))
			if err != nil {
				t.Fatal(err)
			}
			p, err := nodes[0].NewPodNS("v" + strings.ReplaceAll(v, ".", ""))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := cni.AddNetworkList(ctx, list, p.RuntimeConf())
			if err != nil {
				t.Fatal(err)
			}
			if res.Version() != v {
				t.Fatalf("result version %s, want %s", res.Version(), v)
			}
			if err := rig.Eventually(10*time.Second, func() error { return rig.Ping(p.NS, server.IP) }); err != nil {
				t.Fatal(err)
			}
			if err := cni.CheckNetworkList(ctx, list, p.RuntimeConf()); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			if err := cni.DelNetworkList(ctx, list, p.RuntimeConf()); err != nil {
				t.Fatalf("DEL: %v", err)
			}
		})
	}
}
