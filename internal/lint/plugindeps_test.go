package lint

import (
	"os/exec"
	"strings"
	"testing"
)

// pluginMustNotLink are packages the CNI plugin stays free of. The plugin
// is started anew for every ADD and DEL, and what it links is paid at each
// start: net/http (and the crypto/tls and x509 it brings) cost 1–3 ms a
// start here, which is why api's client writes its requests itself.
var pluginMustNotLink = []string{"net/http", "crypto/tls", "go.uber.org/zap", "github.com/hashicorp/memberlist", "go.etcd.io/bbolt"}

// heavyPluginDeps reports the packages of deps (as go list -deps prints
// them) that the plugin must not link.
func heavyPluginDeps(deps []string) []string {
	var found []string
	for _, d := range deps {
		for _, banned := range pluginMustNotLink {
			if d == banned || strings.HasPrefix(d, banned+"/") {
				found = append(found, d)
			}
		}
	}
	return found
}

func TestCNIPluginLinksNoHeavyPackages(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../../cmd/loom").Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/loom: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list found only %d packages; is it looking at the plugin?", len(deps))
	}
	if found := heavyPluginDeps(deps); len(found) > 0 {
		t.Errorf("the CNI plugin links %s; every pod's ADD and DEL pays for it at the plugin's start (see api/exchange.go)", strings.Join(found, ", "))
	}
}

func TestHeavyPluginDepsFindsEachKind(t *testing.T) {
	got := heavyPluginDeps([]string{"fmt", "net/http", "net/http/httptrace", "net/netip", "crypto/tls", "go.etcd.io/bbolt", "net/httpx"})
	want := []string{"net/http", "net/http/httptrace", "crypto/tls", "go.etcd.io/bbolt"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("found %v, want %v", got, want)
	}
}
